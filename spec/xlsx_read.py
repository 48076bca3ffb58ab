#!/usr/bin/python3
"""Read an .xlsx file with openpyxl (an independent reader: Debian
python3-openpyxl) and print, as one JSON object, what a person opening it
would find: for spec/xlsx_spec.lua.

    spec/xlsx_read.py FILE [ROWS]

{ "sheets": ["Data", ...], "xml_ok": true,
  "sheet": { NAME: { "rows": N, "cols": N, "freeze": "A2", "filter": "A1:T601",
                     "widths": {"A": 12.7, ...},
                     "cells": [[{"v": ..., "t": "s"|"n"|"d"|..., "f": "General"}, ...], ...],  (the first ROWS
                                rows; all of About)
                     "kinds": {"date": ["d yyyy-mm-dd hh:mm:ss"], ...},   (per header: type and format of every cell)
                     "charts": [{"type": "lineChart", "title": "calls",
                                 "series": [{"name": REF, "cat": REF, "val": REF}]}] } } }

Strings are decoded as Excel decodes them (_xHHHH_ is the character HHHH);
dates become "YYYY-MM-DD HH:MM:SS", times seconds.
"""
import datetime
import json
import re
import sys
import zipfile
import xml.etree.ElementTree as ET

import openpyxl

ESC = re.compile(r"_x([0-9A-Fa-f]{4})_")


def text(s):
    return ESC.sub(lambda m: chr(int(m.group(1), 16)), s)


def value(v):
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, datetime.time):
        return v.hour * 3600 + v.minute * 60 + v.second
    if isinstance(v, str):
        return text(v)
    return v


def ref(r):
    if r is None:
        return None
    for k in ("strRef", "numRef"):
        x = getattr(r, k, None)
        if x is not None:
            return x.f
    return None


def title(t):
    if t is None or t.tx is None or t.tx.rich is None:
        return None
    out = []
    for p in t.tx.rich.p:
        for run in p.r or []:
            out.append(run.t)
    return "".join(out)


def charts(ws):
    out = []
    for ch in getattr(ws, "_charts", []):
        series = []
        for s in ch.series:
            series.append({"name": s.tx.strRef.f if s.tx is not None and s.tx.strRef is not None else None,
                           "cat": ref(s.cat), "val": ref(s.val)})
        out.append({"type": ch.tagname, "title": title(ch.title), "series": series})
    return out


def main():
    path = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    # Every XML part parses (a control character or a bad byte would not).
    xml_ok = True
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(".xml") or name.endswith(".rels"):
                try:
                    ET.fromstring(z.read(name))
                except ET.ParseError:
                    xml_ok = False
    wb = openpyxl.load_workbook(path)
    out = {"sheets": wb.sheetnames, "xml_ok": xml_ok, "sheet": {}}
    for ws in wb.worksheets:
        head = [c.value for c in next(ws.iter_rows(max_row=1))] if ws.max_row >= 1 else []
        cells, kinds = [], {}
        for i, row in enumerate(ws.iter_rows()):
            if i < rows or ws.title == "About":
                cells.append([{"v": value(c.value), "t": c.data_type, "f": c.number_format} for c in row])
            if i > 0 and ws.title.startswith("Data"):
                for j, c in enumerate(row):
                    if c.value is None or j >= len(head):
                        continue
                    k = kinds.setdefault(str(head[j]), [])
                    kind = c.data_type + " " + c.number_format
                    if kind not in k:
                        k.append(kind)
        widths = {k: d.width for k, d in ws.column_dimensions.items()}
        out["sheet"][ws.title] = {
            "rows": ws.max_row, "cols": ws.max_column, "freeze": ws.freeze_panes,
            "filter": ws.auto_filter.ref, "widths": widths, "cells": cells, "kinds": kinds,
            "charts": charts(ws),
        }
    json.dump(out, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
