from cjb.cli.main import main

main()
