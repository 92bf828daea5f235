from visionq.cli.main import main

main()
