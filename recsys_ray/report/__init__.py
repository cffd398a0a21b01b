"""The build report: report.html per version (see docs/report.md).

The build calls `recsys_ray.report.writer.write_report`; `recsys-ray report` does the same for any version.
"""
