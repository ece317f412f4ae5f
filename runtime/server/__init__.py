"""The decoding server (`latentwire serve`)."""
