"""Catalog: MSRC documents in (CVRF XML/JSON, SUG pages), normalised entries out, and the queries."""
