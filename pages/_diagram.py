"""The home page's MGR diagram as inline SVG: large, readable text, one picture of one iteration.

Three rows, one per part of the method: (1) the classifier's step on a real batch, (2) synthetic
samples G(F(z), y) that reach only the feature extractor, through the PCR consistency loss, and
(3) the finder's meta-step through a one-step lookahead of the classifier."""
from __future__ import annotations

from html import escape

W, H = 1200, 500
INK, MUTED, META = "#1f2937", "#6b7280", "#c0392b"
FILL = {"real": "#e8f1fb", "syn": "#fdeedd", "net": "#e9f5ec", "loss": "#f3f4f6", "meta": "#fdecec"}


def _box(x, y, w, h, lines, kind, bold_first=True, dashed=False):
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    out = [f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="10" fill="{FILL[kind]}" stroke="{INK}" '
           f'stroke-width="1.4"{dash}/>']
    n = len(lines)
    for i, line in enumerate(lines):
        ty = y + h / 2 + (i - (n - 1) / 2) * 21 + 6
        weight = "600" if (i == 0 and bold_first) else "400"
        size = 17 if i == 0 else 14
        colour = INK if i == 0 else MUTED
        out.append(f'<text x="{x + w / 2}" y="{ty}" text-anchor="middle" font-size="{size}" font-weight="{weight}" '
                   f'fill="{colour}">{escape(line)}</text>')
    return "".join(out)


def _arrow(points, label=None, at=None, colour=INK, dashed=False, anchor="middle"):
    d = "M " + " L ".join(f"{x} {y}" for x, y in points)
    marker = "url(#head-meta)" if colour == META else "url(#head)"
    dash = ' stroke-dasharray="8 5"' if dashed else ""
    out = [f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{2.4 if colour == META else 1.8}" '
           f'marker-end="{marker}"{dash}/>']
    if label:
        lx, ly = at
        out.append(f'<text x="{lx}" y="{ly}" text-anchor="{anchor}" font-size="14" fill="{colour}" '
                   f'font-style="italic">{escape(label)}</text>')
    return "".join(out)


def _step(n, x, y, text):
    return (f'<circle cx="{x}" cy="{y}" r="13" fill="{INK}"/><text x="{x}" y="{y + 5}" text-anchor="middle" '
            f'font-size="14" font-weight="700" fill="white">{n}</text>'
            f'<text x="{x + 22}" y="{y + 5}" font-size="15" font-weight="600" fill="{INK}">{escape(text)}</text>')


def mgr_svg() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        'font-family="Source Sans Pro, Helvetica, Arial, sans-serif">',
        '<defs>'
        f'<marker id="head" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="{INK}"/></marker>'
        f'<marker id="head-meta" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="{META}"/></marker>'
        '</defs>',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        # row 1: the classifier on real data
        _step(1, 32, 28, "the classifier learns from real images only (cross-entropy)"),
        _box(20, 52, 190, 62, ["real batch B", "images x with labels y"], "real"),
        # the shared feature extractor spans rows 1 and 2
        _box(700, 52, 170, 258, ["features g_ψ", "the classifier's", "feature extractor", "(shared by both rows)"], "net"),
        _box(930, 52, 110, 62, ["head h_ω", "linear"], "net"),
        _box(1070, 52, 95, 62, ["CE", "on B"], "loss"),
        _arrow([(210, 83), (700, 83)], "real images", (455, 75)),
        _arrow([(870, 83), (930, 83)]),
        _arrow([(1040, 83), (1070, 83)]),
        # row 2: synthetic samples regularise the features only
        _step(2, 32, 150, "synthetic images only regularise the features (PCR), never the CE"),
        _box(20, 200, 130, 62, ["z ~ N(0, I)", "and a class y"], "syn"),
        _box(185, 200, 150, 62, ["finder F_φ", "z + MLP(z)"], "meta"),
        _box(370, 200, 150, 62, ["generator G", "frozen GAN"], "syn"),
        _box(555, 172, 110, 50, ["x_p", "G(F(z), y)"], "syn", bold_first=True),
        _box(555, 250, 110, 50, ["T(x_p)", "augmented"], "syn"),
        _arrow([(150, 231), (185, 231)]),
        _arrow([(335, 231), (370, 231)]),
        _arrow([(520, 220), (555, 200)]),
        _arrow([(610, 222), (610, 250)]),
        _arrow([(665, 197), (700, 197)]),
        _arrow([(665, 275), (700, 275)]),
        _box(930, 190, 235, 92, ["PCR consistency", "‖g(T(x_p)) − g(x_p)‖²", "features must not move", "under augmentation"],
             "loss"),
        _arrow([(870, 236), (930, 236)]),
        # the objective
        _box(930, 330, 235, 62, ["L(θ; φ) = CE + λ · PCR", "the classifier's step"], "loss"),
        _arrow([(1117, 114), (1117, 150), (1188, 150), (1188, 360), (1167, 360)]),
        _arrow([(1047, 282), (1047, 330)], "λ", (1057, 312), anchor="start"),
        # row 3: the finder's meta-step
        _step(3, 572, 376, "the finder's meta-step: look one step ahead"),
        _box(560, 400, 300, 70, ["lookahead θ′ = θ − η ∇_θ L(θ; φ)", "one SGD step of the classifier"], "meta",
             dashed=True),
        _box(185, 400, 300, 70, ["CE of f_θ′ on a validation batch", "+ λ_KL · KL(F(z) ‖ N(0, I))"], "meta",
             dashed=True),
        _arrow([(1047, 392), (1047, 435), (860, 435)]),
        _arrow([(560, 435), (485, 435)]),
        _arrow([(260, 400), (260, 262)], "meta-gradient ∇_φ (MPS)", (272, 335), colour=META, dashed=True,
               anchor="start"),
        f'<text x="20" y="{H - 8}" font-size="13" fill="{MUTED}">Blue: real data · orange: synthetic · green: '
        'networks trained · red: the finder and its meta-step (dashed: only to compute the finder\'s gradient). '
        'At test time only g_ψ and h_ω remain.</text>',
        "</svg>",
    ]
    return "".join(parts)
