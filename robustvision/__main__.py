"""`python -m robustvision` runs the command-line interface."""

from robustvision.cli import main

if __name__ == "__main__":
    main()
