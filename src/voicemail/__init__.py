"""Self-hosted voicemail for contact centers."""
