"""Layer 6, the application: the command line, planning and running jobs over files,
progress and JSON reports, object storage, and the Ray cluster."""
