"""The case report's stylesheet: screen, and A4 print through Chromium (page breaks, colours)."""

REPORT_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #111; margin: 2rem auto; max-width: 60rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 1.8rem;
  border-bottom: 1px solid #ccc; }
.ruo { border: 3px solid #b00020; background: #fff4f4; color: #b00020; font-weight: 700;
  padding: .6rem .9rem; margin: 1rem 0; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .25rem .45rem; text-align: left; vertical-align: top; }
/* An instrument's file name or a pasted id has no break point: the tables keep set column
   widths and such a word wraps inside its cell rather than pushing the counts off the page. */
td, p, li, figcaption, h1, h3 { overflow-wrap: anywhere; }
/* ... but a label is words: "Reviewed by" broke as "Review ed by" in a narrow preview */
table.meta td:first-child { overflow-wrap: normal; min-width: 6.5rem; }
/* and so are a time and an action ("reviewe / d", "2026-12- / 07" on A4) */
table.audit td:nth-child(1), table.audit td:nth-child(3) { overflow-wrap: normal; }
/* set widths where there is room (print, a wide window); a narrow frame keeps auto layout */
@media print, (min-width: 700px) {
table.counts, table.meta, table.audit { table-layout: fixed; }
table.counts { font-size: .92em; } table.counts th, table.counts td { padding: .25rem .3rem; }
table.counts th:nth-child(1) { width: 17%; } table.counts th:nth-child(2) { width: 10%; }
table.counts th:nth-child(3) { width: 11%; } table.counts th:nth-child(4) { width: 12%; }
table.counts th:nth-child(5) { width: 8%; } table.counts th:nth-child(6) { width: 9%; }
table.counts th:nth-child(7) { width: 18%; } table.counts th:nth-child(8) { width: 15%; }
table.meta th:nth-child(1) { width: 11rem; }
table.audit th:nth-child(1) { width: 15%; } table.audit th:nth-child(2) { width: 12%; }
table.audit th:nth-child(3) { width: 13%; } table.audit th:nth-child(4) { width: 6%; }
table.audit th:nth-child(5) { width: 5%; } table.audit th:nth-child(6) { width: 10%; }
table.audit th:nth-child(7) { width: 10%; } table.audit th:nth-child(8) { width: 29%; }
}
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.hint { color: #6a4a00; }
.cells { display: flex; flex-wrap: wrap; gap: .6rem; }
figure { margin: 0; width: 9.5rem; border: 1px solid #ccc; padding: .3rem; font-size: .8rem; }
figure img { width: 100%; image-rendering: pixelated; }
figure.blast { border: 2px solid #c62828; } figure.uncertain { border: 2px solid #ef8f00; }
figure.changed { border-style: dashed; }
h3 { font-size: 1rem; margin: .8rem 0 .3rem; }
.domain { border: 2px solid #8a5a00; background: #fff8e6; color: #5a3b00; font-weight: 600;
  padding: .5rem .8rem; margin: .8rem 0; }
.signed { font-size: 1.1rem; font-weight: 700; color: #0b6b2b; }
.unsigned { font-size: 1.4rem; font-weight: 800; color: #b00020; letter-spacing: .05em; }
code { font-size: .85rem; word-break: break-all; }
table.keep { break-inside: avoid; } p.reading { break-before: avoid; }
.ruo.closing { break-before: avoid; }
table.audit { font-size: .8rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  h2, h3 { break-after: avoid; } tr, figure, .ruo, table.keep { break-inside: avoid; }
  .ruo { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""
