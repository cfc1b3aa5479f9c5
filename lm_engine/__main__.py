from lm_engine.cli import main

main()
