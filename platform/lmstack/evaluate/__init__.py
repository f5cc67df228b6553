"""Evaluation of exported models."""
