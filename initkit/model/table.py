"""The text table every report of initkit prints (plans, summaries, diagnoses)."""


def number(value: float | None) -> str:
    """A number in a table cell: 4 significant digits, "--" when unknown."""
    return "--" if value is None else f"{value:.4g}"


def format_columns(header: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    """Left-aligned text columns under a header and a rule (shared by initkit's reports)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    out.append("-" * len(out[0]))
    out.extend("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return "\n".join(out)
