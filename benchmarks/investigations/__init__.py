"""Scripts and lecture subclasses that exist only to replicate one investigation (not part of the product API)."""
