"""Cookiecutter templates shipped with kerasls (installed as the package `kerasls.templates`)."""
