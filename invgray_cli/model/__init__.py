"""Layer 3, the network (torch): encoder, SEP gate and decoder, the code length that
training and refinement share, and whether torch is installed at all. Importing this
package imports no torch; its modules that need torch import it themselves."""
