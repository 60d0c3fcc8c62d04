"""The real English words the synthetic generator writes with.

Each theme is a coherent group of six words (a "space" theme: orbit, planet, rocket …),
so that a pretrained encoder (dense retrieval, a MiniLM marker) sees related meanings and
a reader sees real text. Fillers carry no theme; style words sign titles (LaMP-4/5) and
become hashtags (LaMP-7). Every word is lower case, distinct from every other list and
from the task labels, and a single token of BERT's uncased WordPiece vocabulary (the
vocabulary of the packaged all-MiniLM-L6-v2); `tests/lamp/test_synthetic.py` checks it.
"""

from __future__ import annotations

THEMES: tuple[tuple[str, ...], ...] = (
    ("orbit", "planet", "rocket", "moon", "galaxy", "astronaut"),
    ("ocean", "wave", "beach", "shark", "coral", "tide"),
    ("recipe", "oven", "flour", "butter", "kitchen", "bread"),
    ("guitar", "piano", "song", "melody", "drum", "concert"),
    ("soldier", "battle", "army", "tank", "rifle", "enemy"),
    ("wedding", "kiss", "bride", "couple", "heart", "honeymoon"),
    ("police", "detective", "murder", "thief", "prison", "gun"),
    ("football", "goal", "team", "coach", "match", "stadium"),
    ("doctor", "hospital", "nurse", "surgery", "patient", "disease"),
    ("teacher", "student", "classroom", "exam", "homework", "lesson"),
    ("cow", "barn", "tractor", "harvest", "wheat", "pig"),
    ("ghost", "vampire", "zombie", "blood", "scream", "grave"),
    ("computer", "software", "code", "robot", "data", "network"),
    ("airport", "passport", "hotel", "luggage", "flight", "tourist"),
    ("storm", "rain", "thunder", "snow", "wind", "cloud"),
    ("king", "queen", "castle", "prince", "throne", "crown"),
    ("court", "judge", "lawyer", "trial", "jury", "verdict"),
    ("tree", "wolf", "bear", "hunter", "wood", "deer"),
    ("painting", "museum", "artist", "canvas", "brush", "gallery"),
    ("bank", "cash", "loan", "debt", "wealth", "coin"),
    ("election", "president", "vote", "senator", "campaign", "congress"),
    ("church", "priest", "prayer", "god", "temple", "faith"),
    ("sand", "camel", "cactus", "dune", "oasis", "desert"),
    ("engine", "driver", "highway", "truck", "wheel", "garage"),
    ("mother", "father", "child", "baby", "daughter", "son"),
    ("dog", "cat", "puppy", "kitten", "parrot", "pet"),
    ("dress", "shirt", "shoes", "jacket", "hat", "fabric"),
    ("lab", "experiment", "chemistry", "physics", "atom", "molecule"),
    ("cliff", "peak", "summit", "hiking", "glacier", "rope"),
    ("street", "taxi", "subway", "apartment", "downtown", "traffic"),
    ("ancient", "empire", "emperor", "pyramid", "roman", "medieval"),
    ("flame", "smoke", "ash", "fire", "burn", "spark"),
    ("flower", "rose", "seed", "soil", "plant", "garden"),
    ("boat", "sail", "captain", "anchor", "harbor", "pirate"),
    ("railway", "station", "ticket", "platform", "passenger", "train"),
    ("ballet", "dancer", "stage", "costume", "rhythm", "dance"),
    ("chess", "card", "dice", "puzzle", "player", "board"),
    ("wizard", "spell", "dragon", "witch", "potion", "fairy"),
    ("muscle", "bone", "skin", "brain", "lung", "tooth"),
    ("fish", "lake", "river", "bait", "hook", "pond"),
)

FILLERS: tuple[str, ...] = tuple("""
very then also just some many much often always never still again even other same
new old good bad big small long short high low early late first last next each every
few more most own such only well back away around down off over under after before
while since until because though perhaps maybe really quite rather almost about into
upon within without through across along among between against toward place thing
time day year week night morning people man woman way part world life hand eye name
side case point fact group number area kind line end idea word question answer room
door house window road home work job friend talk walk look turn bring keep leave moment
""".split())

STYLES: tuple[str, ...] = tuple("""
amazing ultimate secret hidden simple modern brilliant curious strange wild quiet
bright golden silver gentle bold brave lucky lonely happy sad funny crazy perfect
rare tiny giant final lost forgotten eternal sweet bitter fresh frozen broken silent
famous honest clever proud wise grand royal fearless hopeful endless real pure epic noble wicked calm
deep sharp soft loud fast slow warm cold
""".split())
