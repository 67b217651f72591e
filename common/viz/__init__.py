"""FLAME geometry, rendering and plots."""
