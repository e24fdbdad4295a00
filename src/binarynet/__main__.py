"""``python -m binarynet`` (and ``torchrun -m binarynet train ...``) run the CLI."""
import sys

from .cli import main

sys.exit(main())
