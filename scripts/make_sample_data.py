"""Generate the embedded sample data set of the ``tabular-intent`` template.

Generative story
----------------
Each row is one web session on an e-commerce site, labelled with the shopper's
intent: ``purchase`` (~25%), ``browse`` (~60%) or ``support`` (~15%).  Labels
are assigned in exact proportions and shuffled, then every intent has its own
generator for four groups of features:

* engagement: ``pages_viewed`` (1 + negative binomial), ``product_pages`` (binomial
  share of them), ``session_minutes`` (pages times a lognormal time per page) and
  the landing page's ``bounce_rate`` (scaled beta, 0-0.2);
* cart: ``cart_adds`` (Poisson, capped by pages) and the ``discount_pct`` shown (0-50);
* context: ``device``, ``traffic_source``, ``visitor_type``, ``month`` (categorical);
* query: ``search_query``, 2-6 lower-case words from an intent phrase, shared
  modifiers and shared product nouns (~15% of sessions never search).

Purchasers view more product pages, add to cart, stay longer, come back and
arrive from email or ads; browsers view many pages, rarely add to cart and
bounce more, arriving new from social or search; support visitors stay briefly,
come in directly and type "refund" or "track package".  The distributions
overlap widely, and about 15% of sessions are ambiguous: each feature group is
drawn 50/50 from the true intent's generator or a second intent's (a purchaser
who browses a lot, a support visitor who adds to cart), and phrases leak across
intents.  ~2% of ``session_minutes`` and ~1% of ``traffic_source`` are blank.

Everything comes from ``numpy.random.default_rng(20261123)`` (train, then test),
so the output is byte-identical from run to run.  Usage::

    python scripts/make_sample_data.py [--out DIR] [--rows N] [--test-rows N]
"""

import argparse
import csv
from pathlib import Path

import numpy as np

SEED = 20261123
DEFAULT_OUT = (Path(__file__).resolve().parents[1] / "templates" / "tabular-intent"
               / "{{cookiecutter.project_slug}}" / "data")
COLUMNS = ["pages_viewed", "product_pages", "session_minutes", "cart_adds",
           "discount_pct", "bounce_rate", "device", "traffic_source",
           "visitor_type", "month", "search_query", "intent"]
INTENTS = ["purchase", "browse", "support"]
SHARES = [0.25, 0.60, 0.15]
AMBIGUOUS_SHARE = 0.15
# For an ambiguous row, which other intent its features are mixed with.
PARTNERS = {"purchase": (["browse", "support"], [0.75, 0.25]),
            "browse": (["purchase", "support"], [0.70, 0.30]),
            "support": (["purchase", "browse"], [0.55, 0.45])}

DEVICES = ["desktop", "mobile", "tablet"]
SOURCES = ["search", "ads", "email", "direct", "social"]
VISITORS = ["new", "returning"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
OFFERS = np.array([0.0, 5.0, 10.0, 12.5, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0])

PRODUCTS = ["running shoes", "usb c charger", "winter jacket", "wireless earbuds", "coffee maker",
            "yoga mat", "laptop bag", "phone case", "desk lamp", "backpack", "sneakers",
            "air fryer", "smart watch", "rain boots", "bluetooth speaker", "hoodie", "jeans",
            "office chair", "sunglasses", "water bottle"]
MODIFIERS = ["mens", "womens", "kids", "black", "white", "large", "waterproof",
             "cheap", "2025", "sale", "leather", "blue"]
PHRASES = {
    "purchase": ["buy", "size 10", "size m", "in stock", "add to cart", "order", "discount code",
                 "free shipping", "coupon", "deal", "price", "pay with paypal", "gift card"],
    "browse": ["ideas", "best", "vs", "reviews", "new arrivals", "top rated", "gift ideas",
               "trending", "how to choose", "compare", "collection", "lookbook",
               "what is the best"],
    "support": ["return", "refund", "order status", "track package", "cancel order", "warranty",
                "exchange", "damaged", "missing item", "return policy", "where is my order",
                "contact support", "change address"],
}

# Per-intent generators: negative binomial (n, p) of extra pages, beta of the product-page
# share, lognormal (mu, sigma) minutes per page, beta of bounce rate / 0.2, Poisson mean of
# cart adds, and weights over OFFERS, DEVICES, SOURCES and MONTHS.
PARAMS = {
    "purchase": dict(pages=(3.0, 0.32), product=(5, 4), per_page=(-0.05, 0.55),
                     bounce=(2, 20), carts=1.9, offer_w=[3, 2, 3, 1, 3, 3, 2, 2, 1, 1],
                     device=[.50, .40, .10], source=[.25, .27, .23, .15, .10],
                     returning=.68, month_w=[8, 6, 7, 7, 7, 7, 7, 7, 7, 8, 12, 14],
                     query_empty=.12, leak=.15),
    "browse": dict(pages=(2.0, 0.20), product=(3, 4), per_page=(-0.20, 0.55),
                   bounce=(4, 16), carts=0.2, offer_w=[5, 3, 3, 1, 2, 2, 1, 1, 1, 1],
                   device=[.35, .55, .10], source=[.33, .18, .09, .14, .26],
                   returning=.32, month_w=[8, 7, 8, 8, 8, 8, 8, 8, 8, 8, 10, 10],
                   query_empty=.16, leak=.15),
    "support": dict(pages=(2.0, 0.50), product=(1, 6), per_page=(-0.05, 0.60),
                    bounce=(3, 20), carts=0.25, offer_w=[6, 3, 2, 1, 1, 1, 1, 1, 0, 0],
                    device=[.45, .47, .08], source=[.22, .06, .20, .46, .06],
                    returning=.60, month_w=[14, 9, 8, 7, 7, 7, 7, 7, 7, 8, 9, 10],
                    query_empty=.15, leak=.20),
}


def _pick(rng, items, weights=None):
    w = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=float)
    return items[rng.choice(len(items), p=w / w.sum())]


def engagement(rng, intent):
    p = PARAMS[intent]
    pages = 1 + int(rng.negative_binomial(*p["pages"]))
    product = int(rng.binomial(pages, rng.beta(*p["product"])))
    minutes = max(0.1, pages * rng.lognormal(*p["per_page"]))
    bounce = 0.2 * rng.beta(*p["bounce"])
    return {"pages_viewed": pages, "product_pages": product,
            "session_minutes": minutes, "bounce_rate": bounce}


def cart(rng, intent):
    p = PARAMS[intent]
    return {"cart_adds": int(rng.poisson(p["carts"])),
            "discount_pct": float(_pick(rng, OFFERS, p["offer_w"]))}


def context(rng, intent):
    p = PARAMS[intent]
    return {"device": _pick(rng, DEVICES, p["device"]),
            "traffic_source": _pick(rng, SOURCES, p["source"]),
            "visitor_type": VISITORS[int(rng.random() < p["returning"])],
            "month": _pick(rng, MONTHS, p["month_w"])}


def query(rng, intent):
    p = PARAMS[intent]
    if rng.random() < p["query_empty"]:
        return {"search_query": ""}
    source = intent  # phrases are not exclusive: some come from another intent's list
    if rng.random() < p["leak"]:
        source = _pick(rng, INTENTS, [float(i != intent) for i in INTENTS])
    phrase = _pick(rng, PHRASES[source])
    words = [_pick(rng, MODIFIERS)] if rng.random() < 0.4 else []
    words.append(_pick(rng, PRODUCTS))
    if rng.random() < 0.8:
        words = [phrase] + words if rng.random() < 0.5 else words + [phrase]
    text = " ".join(words).split()
    if len(text) < 2:
        text.insert(0, _pick(rng, MODIFIERS))
    return {"search_query": " ".join(text[:6])}


GROUPS = [engagement, cart, context, query]


def make_rows(rng, n):
    counts = np.round(np.asarray(SHARES) * n).astype(int)
    counts[1] = n - counts[0] - counts[2]
    labels = rng.permutation(np.repeat(INTENTS, counts))
    rows = []
    for label in labels:
        label = str(label)
        sources = [label] * len(GROUPS)
        if rng.random() < AMBIGUOUS_SHARE:
            partner = _pick(rng, *PARTNERS[label])
            sources = [partner if rng.random() < 0.5 else label for _ in GROUPS]
        row = {"intent": label}
        for group, src in zip(GROUPS, sources):
            row.update(group(rng, src))
        row["cart_adds"] = min(row["cart_adds"], row["pages_viewed"])  # groups may mix
        rows.append(row)
    return rows


def format_row(rng, row):
    """Round like an analytics export and blank a few cells."""
    out = dict(row, session_minutes=f"{row['session_minutes']:.1f}",
               discount_pct=f"{row['discount_pct']:.1f}", bounce_rate=f"{row['bounce_rate']:.4f}")
    if rng.random() < 0.02:
        out["session_minutes"] = ""
    if rng.random() < 0.01:
        out["traffic_source"] = ""
    return [out[c] for c in COLUMNS]


def write_csv(path, rng, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(format_row(rng, row))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rows", type=int, default=2000, help="training rows")
    parser.add_argument("--test-rows", type=int, default=500, help="test rows")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, n in [("train.csv", args.rows), ("test.csv", args.test_rows)]:
        path = args.out / (template_file_name(name) if args.out == DEFAULT_OUT else name)
        write_csv(path, rng, make_rows(rng, n))
        print(f"wrote {n} rows to {path}")


def template_file_name(name):
    """In the template the files exist only when `sample_data` is yes (cookiecutter skips empty names)."""
    return "{% if cookiecutter.sample_data == 'yes' %}" + name + "{% endif %}"


if __name__ == "__main__":
    main()
