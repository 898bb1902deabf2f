"""`python -m voicemail` runs the CLI."""

from voicemail.cli import main

main()
