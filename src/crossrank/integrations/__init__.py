"""Integrations with other systems (Celery, LangChain, LlamaIndex, Haystack); each imports its framework when used."""
