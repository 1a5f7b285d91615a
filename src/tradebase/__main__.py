from tradebase.cli import main

main()
