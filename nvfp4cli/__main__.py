"""`python -m nvfp4cli` runs the CLI (torchrun needs a module entry point)."""

from .cli import main

if __name__ == "__main__":
    main()
