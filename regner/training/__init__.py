"""The training loop and what it needs: optimizer, device, resume state, callbacks, data parallelism."""
