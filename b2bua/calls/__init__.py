"""Calls: an A-leg we answer as UAS and B-leg branches we send as UAC."""
