"""Chat templates: turning a list of messages into one prompt string."""
