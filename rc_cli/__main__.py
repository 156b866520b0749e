from rc_cli.main import main

main()
