"""The reference platform receiver (a test tool that reads as the contract's reference)."""
