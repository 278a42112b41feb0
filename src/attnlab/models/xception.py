"""PLACEHOLDER: being written."""
