#!/usr/bin/env python3
# Generates the labelled retrieval set of memory_test (docs.tsv, queries.tsv, synonyms.txt):
# seeded, so the committed files are reproducible. Not run by the build.
import random

rng = random.Random(18)
groups = [
    "car automobile vehicle motorcar", "repair maintenance servicing overhaul",
    "cost price expense charge", "doctor physician medic clinician",
    "house dwelling residence homestead", "buy purchase acquire procure",
    "big large huge enormous", "fast quick rapid speedy", "error fault failure defect",
    "begin start commence initiate", "help assist aid support", "shop retailer boutique outlet",
    "film movie picture cinema", "child kid youngster toddler", "money cash funds currency",
    "trip journey voyage excursion", "job occupation employment profession",
    "sick ill unwell ailing", "road street highway avenue", "ocean sea marine maritime",
    "garden orchard allotment yard", "teacher instructor tutor educator",
    "letter message note memo", "storm tempest gale squall",
]
filler = """apple river stone window paper lamp chair table green blue music piano violin
bread cheese coffee tea sugar salt pepper garlic onion carrot potato tomato bridge tower
castle village city mountain valley forest desert island harbor market festival museum
library school student lesson exam chapter novel poem story painter canvas brush color
engine wheel pedal brake mirror battery cable socket switch signal antenna radio camera
lens photo album record sensor robot laptop keyboard screen printer folder server cloud
network router packet socketry kernel compiler parser token schema column index query
planet comet rocket orbit galaxy telescope crater lunar solar winter summer autumn spring
morning evening midnight breakfast dinner supper lunch picnic blanket pillow candle
mirrorball sweater jacket boots scarf glove umbrella ticket passport luggage station
platform tunnel ferry canal lake pond meadow hill cliff glacier volcano canyon prairie
falcon eagle sparrow owl rabbit badger otter salmon trout dolphin whale beetle spider
silver copper bronze marble granite timber bamboo cotton wool leather velvet linen
""".split()
filler = sorted(set(filler))
for g in groups:
    for w in g.split():
        assert w not in filler

def sentence(n):
    return " ".join(rng.choice(filler) for _ in range(n))

docs, queries = [], []
# synonym answers: each pairs three groups; the doc says one member, the query another
used = set()
for i in range(20):
    while True:
        gs = tuple(sorted(rng.sample(range(len(groups)), 3)))
        if gs not in used:
            used.add(gs)
            break
    dwords, qwords = [], []
    for g in gs:
        m = groups[g].split()
        a, b = rng.sample(m, 2)
        dwords.append(a)
        qwords.append(b)
    did = "syn-%02d" % i
    text = "The %s and the %s of the %s, %s." % (dwords[0], dwords[1], dwords[2], sentence(6))
    docs.append((did, text))
    queries.append(("synonym", did, " ".join(qwords)))
# exact answers: a rare code in a long text of common words; the query is the code alone
for i in range(20):
    code = "%s%d%s" % ("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(2)),
                       rng.randint(1000, 9999), rng.choice("bcdfghjklmnpqrstvwxz"))
    did = "exact-%02d" % i
    words = [rng.choice(filler) for _ in range(160)]
    words.insert(rng.randint(20, 140), code)
    docs.append((did, "Record " + " ".join(words) + "."))
    queries.append(("exact", did, code.upper() if i % 2 else code))
# distractors: short, common words only
for i in range(260):
    docs.append(("filler-%03d" % i, sentence(rng.randint(6, 14)).capitalize() + "."))
rng.shuffle(docs)
with open("docs.tsv", "w") as f:
    for d, t in docs:
        f.write("%s\t%s\n" % (d, t))
with open("queries.tsv", "w") as f:
    for k, d, q in queries:
        f.write("%s\t%s\t%s\n" % (k, d, q))
with open("synonyms.txt", "w") as f:
    for g in groups:
        f.write(g + "\n")
