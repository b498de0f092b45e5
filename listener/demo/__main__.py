"""`python -m listener.demo`: run the demo from the command line."""

from listener.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
