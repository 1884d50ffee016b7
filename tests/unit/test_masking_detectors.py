"""Strategies and content detectors (no database needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgguard.config import MaskingConfig, MaskRule
from pgguard.masking import Detectors, RuleSet, hash_token, iban_ok, luhn_ok, partial, scan_text
from pgguard.masking import detectors as det_module
from pgguard.masking.rules import Mask, apply_text, load_hash_key, stricter

ALL_DETECTORS = det_module.ALL


def test_partial_keeps_exactly_keep_characters():
    assert partial("123-45-6789", 4) == "*******6789"
    assert partial("4111 1111 1111 1111", 4) == "***************1111"
    assert partial("abc", 4) == "***"          # too short: keeping 4 would reveal it all
    assert partial("abcd", 4) == "****"
    assert partial("secret", 0) == "******"
    assert partial("", 4) == ""


@given(st.text(min_size=0, max_size=40), st.integers(min_value=0, max_value=10))
def test_partial_never_reveals_more_than_keep(value, keep):
    out = partial(value, keep)
    assert len(out) == len(value)
    revealed = len(out) - out.count("*") if "*" not in value else None
    if revealed is not None:
        assert revealed == (keep if len(value) > keep else 0)


def test_hash_tokens_are_stable_keyed_and_distinct():
    a = hash_token("alice@example.com", b"k1")
    assert a == hash_token("alice@example.com", b"k1")
    assert a.startswith("h:") and len(a) == 18
    assert a != hash_token("alice@example.com", b"k2")
    assert a != hash_token("bob@example.com", b"k1")
    assert hash_token(b"x", b"k") == hash_token("x", b"k")


def test_apply_text_strategies():
    assert apply_text(Mask("redact"), "x", b"k") == "***"
    assert apply_text(Mask("null"), "x", b"k") is None
    assert apply_text(Mask("partial", 2), "abcdef", b"k") == "****ef"
    assert apply_text(Mask("hash"), "abc", b"k") == hash_token("abc", b"k")


def test_stricter():
    p = Mask("partial", 4)
    assert stricter(None, p) == p and stricter(p, None) == p
    assert stricter(p, Mask("hash")).strategy == "redact"
    assert stricter(Mask("null"), p).strategy == "null"


def test_rules_match_globs_first_rule_wins():
    rules = RuleSet((MaskRule(("public.users.ssn", "*.*.card_number"), "partial", 4),
                     MaskRule(("*.email",), "hash"),
                     MaskRule(("users.*",), "redact")))
    assert rules.match("public", "users", "ssn") == Mask("partial", 4)
    assert rules.match("sales", "users", "ssn") == Mask("redact")     # users.* only
    assert rules.match("x", "payments", "card_number") == Mask("partial", 4)
    assert rules.match("public", "notes", "email") == Mask("hash")
    assert rules.match("public", "USERS", "SSN") == Mask("partial", 4)   # case-insensitive
    assert rules.match("public", "notes", "body") is None


def test_hash_key_file(tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"  secret-key\n")
    assert load_hash_key(MaskingConfig(hash_key_file=str(key))) == b"secret-key"
    assert len(load_hash_key(MaskingConfig())) == 32
    key.write_bytes(b"")
    with pytest.raises(ValueError):
        load_hash_key(MaskingConfig(hash_key_file=str(key)))


def test_luhn_and_iban():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("378282246310005")
    assert iban_ok("DE89370400440532013000") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89370400440532013001")
    assert not iban_ok("DE8937040044053201300")    # wrong length for DE
    assert not iban_ok("XX00")


FOUND = [
    ("write to john.doe+tag@mail.example.co.uk today", "email"),
    ("SSN 123-45-6789.", "ssn"),
    ("ssn 123 45 6789", "ssn"),
    ("card 4111 1111 1111 1111 exp", "card"),
    ("card 4111-1111-1111-1111", "card"),
    ("amex 378282246310005", "card"),
    ("call +14155552671", "phone"),
    ("call +1 415 555 2671", "phone"),
    ("call (415) 555-2671", "phone"),
    ("call 415-555-2671", "phone"),
    ("ruf +49 30 1234567 an", "phone"),
    ("appelez 06 12 34 56 78", "phone"),
    ("ring 020 7946 0958", "phone"),
    ("pay DE89 3704 0044 0532 0130 00 now", "iban"),
    ("pay GB82WEST12345698765432", "iban"),
    ("key AKIAIOSFODNN7EXAMPLE", "secret"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "secret"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA (truncated)", "secret"),
    ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl", "secret"),
    ("gh ghp_" + "A1b2" * 9, "secret"),
    ("slack xoxb-123456789012-abcdefghij", "secret"),
    ("openai sk-proj-abcdefghijklmnopqrstuv12345", "secret"),
    ("stripe sk_live_abcdefghijklmnop1234", "secret"),
]

NOT_FOUND = [
    "order 12345678 shipped",
    "4111111111111112",                     # fails Luhn
    "timestamp 2024-01-15 10:30:00+00",
    "date 15/01/2024 and 01.02.2024",
    "version 10.2.3-1 build 20240115",
    "pi is 3.14159265358979",
    "000-12-3456 is not a valid SSN",
    "666-12-3456 neither",
    "DE89370400440532013001",               # fails mod-97
    "user@localhost",
    "ask me about sk- prefix",
    "id 100000000000000001",               # 18 digits starting with 1, not a card
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "ip 192.168.100.200 port 5432",
]


@pytest.mark.parametrize(("text", "kind"), FOUND)
def test_detectors_find(text, kind):
    out = scan_text(text)
    assert f"[{kind}]" in out, out


@pytest.mark.parametrize("text", NOT_FOUND)
def test_detectors_do_not_find(text):
    assert scan_text(text) == text


def test_scan_text_removes_the_value_and_keeps_the_rest():
    s = "Mail alice@example.com, SSN 123-45-6789, card 4111111111111111."
    assert scan_text(s) == "Mail [email], SSN [ssn], card [card]."


def test_detector_selection():
    only_email = Detectors(["email"])
    assert only_email.scan_text("a@b.example 123-45-6789") == "[email] 123-45-6789"
    assert not Detectors([])
    assert Detectors([]).scan_text("a@b.example") == "a@b.example"
    with pytest.raises(ValueError):
        Detectors(["bogus"])


@given(st.text(max_size=200))
def test_scan_text_total(s):
    out = scan_text(s)
    assert isinstance(out, str)
    assert scan_text(out) == out       # markers are not detected again


# -- the pre-filter is conservative: it never changes what the detectors find ----------

# Characters PII shapes are made of, so random strings often come close to a match.
PII_ALPHABET = "0123456789" * 4 + "  --..@(())+/_=:AKISDEGByJxobkghpsrtz\n\u0663\uff11\u017f"
NAMES = ("email", "ssn", "card", "phone", "iban", "secret")


# The shortest values each detector finds: exactly at the pre-filter's minimum length or
# digit count, so a pre-filter one step too strict fails here.
MINIMAL = [
    ("a@b.cc", "email"),
    ("+1234567", "phone"),
    ("123-45-6789", "ssn"),
    ("4222222222222", "card"),
    ("NO9386011117947", "iban"),
    ("xoxb-1234567890", "secret"),
    ("AKIAABCDEFGHIJKLMNOP", "secret"),
    ("+1(23)-(45)-(67)-89", "phone"),        # the widest gap between digits: ")-("
    ("0301/123 456", "phone"),               # "/" between digits
]


@pytest.mark.parametrize(("text", "kind"), MINIMAL)
def test_prefilter_minimal_values(text, kind):
    for names in (NAMES, (kind,)):
        det = Detectors(names)
        assert det.find(text) == [(0, len(text), kind)]
        assert not det.skips_bytes(text.encode())
        assert det.find(text[1:]) == det.find(text[1:], prefilter=False)


def _pii_text():
    pieces = st.sampled_from([t for t, _ in FOUND + MINIMAL] + NOT_FOUND)
    glue = st.text(alphabet=PII_ALPHABET, max_size=8)
    return st.one_of(
        st.text(alphabet=PII_ALPHABET, max_size=60),
        st.lists(st.one_of(pieces, glue), max_size=4).map("".join),
        # cut samples: values just below or at a detector's minimum length or digits
        st.tuples(pieces, st.integers(0, 60), st.integers(0, 60)).map(
            lambda t: t[0][min(t[1], t[2]):max(t[1], t[2])]),
    )


@given(st.one_of(st.text(max_size=120), _pii_text()),
       st.sets(st.sampled_from(NAMES), min_size=1))
def test_prefilter_never_changes_findings(s, names):
    det = Detectors(names)
    full = det.find(s, prefilter=False)
    assert det.find(s) == full
    assert det.scan_text(s) == det.scan_text(s, prefilter=False)
    assert det.scan_text(s) == det.scan_text(s)      # second call: from the cache
    encoded = s.encode("utf-8", "surrogatepass")
    if det.skips_bytes(encoded):
        assert full == [], (s, full)


@pytest.mark.parametrize(("text", "kind"), FOUND)
def test_prefilter_keeps_every_sample(text, kind):
    for names in (NAMES, (kind,)):
        det = Detectors(names)
        assert not det.skips_bytes(text.encode())
        assert f"[{kind}]" in det.scan_text(text)


def test_prefilter_skips_plain_values_without_decoding():
    for v in (b"name 1234", b"city 34", b"1234 Main Street", b"label-1234",
              b"a note about nothing in particular 1234"):
        assert ALL_DETECTORS.skips_bytes(v), v
    # non-ASCII values are decoded and scanned: other scripts have their own digits
    assert not ALL_DETECTORS.skips_bytes("١٢٣-٤٥-٦٧٨٩".encode())
    assert ALL_DETECTORS.find("١٢٣-٤٥-٦٧٨٩") == ALL_DETECTORS.find("١٢٣-٤٥-٦٧٨٩",
                                                                  prefilter=False)


def test_secret_without_digits_is_found():
    # Found by the conservativeness test: the old pre-filter wanted a digit or "@".
    for s in ("key AKIAABCDEFGHIJKLMNOP", "AIza" + "abcdefghij" * 3 + "abcde"):
        assert "[secret]" in scan_text(s), s


def test_scan_cache_is_bounded():
    det = Detectors(NAMES)
    for i in range(det_module.CACHE_SIZE + 100):
        det.scan_text(f"value number {i:08d} here")
    assert len(det._cache) <= det_module.CACHE_SIZE
    assert det.scan_text("mail alice@example.com") == "mail [email]"
    assert det.scan_text("mail alice@example.com") == "mail [email]"


def test_hash_action_is_cached_bounded_and_equal_to_hash_token():
    from pgguard.masking import rewrite

    codec = rewrite.ValueCodec(b"k", Detectors([]), "latin-1")
    act = codec.mask_action(Mask("hash"), rewrite.TEXT, False)
    value = "Müller".encode("latin-1")
    assert act(value) == hash_token("Müller", b"k").encode()
    assert act(value) == act(value) and value in codec._tokens
    for i in range(rewrite.HASH_CACHE_SIZE + 10):
        act(b"v%d" % i)
    assert len(codec._tokens) <= rewrite.HASH_CACHE_SIZE
    assert act(b"v5") == hash_token("v5", b"k").encode()      # evicted: recomputed
    assert codec.text_mask_action(Mask("hash"))(value) == act(value)
