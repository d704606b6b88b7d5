"""Helpers the tests share: real servers on free ports in temp directories."""
