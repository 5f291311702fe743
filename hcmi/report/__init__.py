"""Reports: tables and figures built from result files (tables.py), the published figures they compare with
(published.py), the paired comparisons and their verdicts (paired.py), and rendering the report notebooks
(notebooks/) to self-contained HTML (render.py)."""
