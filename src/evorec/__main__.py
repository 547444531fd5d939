"""``python -m evorec``, the form ``torchrun ... -m evorec train ...`` starts."""

from evorec.cli.main import main

main()
