"""Integrations with other systems (Celery); each imports its framework only when used."""
