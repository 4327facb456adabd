"""``python -m jetpack`` is the ``jetpack`` command."""

from jetpack.cli import main

if __name__ == "__main__":
    main()
