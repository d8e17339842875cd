"""Reports on exposure, compliance and deadlines: one module per report, one per output format.

``compliance`` (Patch Manager's compliant / non-compliant / unknown per server and baseline),
``sla`` (overdue CVEs by server and severity), ``cve`` (every server exposed to one CVE, since
when, and the KB that closes it), ``trend`` (open and overdue per day, time to remediate) build a
``model.Report``; ``render_csv``, ``render_html`` and ``render_pdf`` (with ``charts``) lay it out.
"""
