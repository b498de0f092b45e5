"""`python -m listener`: the same command as `listener`."""

from listener.cli import main

if __name__ == "__main__":
    main(prog_name="listener")
