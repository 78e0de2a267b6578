"""The base layer every streamvol package may use; it imports nothing of streamvol."""
