"""Media adapters for identity documents: the content checks (`DocumentInspector`, on Pillow and
pikepdf) and the malware scan (`MalwareScanner`, on ClamAV's clamd).

The only package that imports Pillow and pikepdf (an import-linter contract): image and PDF
parsers are the largest attack surface pdvault has, so they stay behind the two ports of
`vault.domain.documents`, and nothing else in pdvault parses a document's content.
"""
