"""Self-attention and the Transformer, lectures 4-5 / HW4-HW5: layers in :mod:`.attention`, decoding in :mod:`.core`."""
