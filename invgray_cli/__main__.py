from invgray_cli.app.cli import main

main()
