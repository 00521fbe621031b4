"""Rows about people: clients, their contacts, account-contact links and consent choices.

A client's birth date, sex and tax number come from one bijection of the client id
(see ``_Births``), so tax numbers are unique and still encode the birth date and sex
the way real RNOKPP numbers do. Passport and phone numbers are bijections of the
client and contact ids. Everything else is drawn from the chunk's RNG.
"""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect
from functools import cache
from typing import Final, NamedTuple

from crm.search_words import client_search_keys, search_norm
from herald.cli.seed import names
from herald.cli.seed.codes import (
    TAX_EPOCH,
    Permutation,
    derive_seed,
    mobile_phone,
    tax_id,
)
from herald.cli.seed.sampling import AS_OF, AS_OF_DAY, CLOCK, DAY, DAY0, weighted_table

R: Final = "\t"
NULL: Final = "\\N"

# Account holders by age: anchors (age, relative weight) and the female share by age
# (older holders are more often women: widows keep the account in their name).
_AGE_WEIGHT: Final = (
    (18, 0.1),
    (23, 0.4),
    (30, 0.8),
    (40, 1.0),
    (50, 1.15),
    (60, 1.25),
    (70, 1.05),
    (80, 0.55),
    (90, 0.15),
    (100, 0.02),
)
_FEMALE_SHARE: Final = ((18, 0.48), (40, 0.52), (60, 0.58), (75, 0.66), (90, 0.75), (100, 0.8))
_BOOKLET_LETTERS: Final = "АВЕКМНОРСТ"
_TAX_DAY0: Final = (
    DAY0 - TAX_EPOCH
).days  # day numbers here count from DAY0, RNOKPP from 31.12.1899

# E-mail local parts: (pattern number for _email_local, weight).
_EMAIL_PATTERNS: Final = (
    (0, 25),
    (1, 10),
    (2, 15),
    (3, 10),
    (4, 10),
    (5, 8),
    (6, 7),
    (7, 8),
    (8, 7),
)

_MARKETING_SOURCES: Final = (
    ("cabinet", 30),
    ("app", 25),
    ("chatbot", 15),
    ("operator", 10),
    ("contract", 12),
    ("import", 8),
)
# Explicit consent choices: (channel, topic, share opted in, share opted out, sources of
# an opt-in, sources of an opt-out, only for clients with an e-mail). No row means the
# topic's default, so service topics mostly appear as opt-outs.
_CONSENTS: Final = (
    ("sms", "marketing", 0.05, 0.02, _MARKETING_SOURCES, (("sms_stop", 8), ("operator", 2)), False),
    (
        "viber",
        "marketing",
        0.09,
        0.01,
        _MARKETING_SOURCES,
        (("chatbot", 3), ("app", 1), ("cabinet", 1)),
        False,
    ),
    (
        "email",
        "marketing",
        0.15,
        0.04,
        _MARKETING_SOURCES,
        (("email_unsubscribe", 85), ("cabinet", 15)),
        True,
    ),
    ("push", "marketing", 0.04, 0.005, (("app", 1),), (("app", 1),), False),
    ("telegram", "marketing", 0.03, 0.003, (("chatbot", 1),), (("chatbot", 1),), False),
    ("voice", "marketing", 0.003, 0.01, (("operator", 1),), (("operator", 1),), False),
    ("sms", "billing", 0.0, 0.015, (), (("sms_stop", 8), ("operator", 2)), False),
    (
        "email",
        "billing",
        0.07,
        0.02,
        (("cabinet", 3), ("contract", 1)),
        (("email_unsubscribe", 1),),
        True,
    ),
    ("telegram", "billing", 0.02, 0.0, (("chatbot", 1),), (), False),
    ("push", "billing", 0.025, 0.0, (("app", 1),), (), False),
    ("sms", "debt", 0.0, 0.005, (), (("sms_stop", 6), ("operator", 4)), False),
    ("voice", "debt", 0.0, 0.01, (), (("operator", 1),), False),
    ("viber", "service", 0.0, 0.01, (), (("chatbot", 3), ("app", 1)), False),
    ("push", "service", 0.0, 0.008, (), (("app", 1),), False),
    ("email", "case_status", 0.0, 0.006, (), (("email_unsubscribe", 1),), True),
)


def _interpolate(anchors: tuple[tuple[int, float], ...], age: float) -> float:
    for (a0, v0), (a1, v1) in itertools.pairwise(anchors):
        if age <= a1:
            return v0 + (v1 - v0) * max(0.0, age - a0) / (a1 - a0)
    return anchors[-1][1]


def _email_local(pattern: int, first: str, last: str, year: int, n: int) -> str:
    """Local part of an e-mail from Latin first and last names (ivan.kovalenko, kovalenko87...)."""
    if pattern == 0:
        return f"{first}.{last}"
    if pattern == 1:
        return f"{last}.{first}"
    if pattern == 2:
        return f"{first}{last}{year % 100:02d}"
    if pattern == 3:
        return f"{last}{year % 100:02d}"
    if pattern == 4:
        return f"{first[0]}.{last}"
    if pattern == 5:
        return f"{first}_{last}"
    if pattern == 6:
        return f"{last}_{first[0]}"
    if pattern == 7:
        return f"{first}{year}"
    return f"{last}{n}"


class _Births:
    """Birth day and sex of client number x, as a bijection onto (day, sex, serial) slots.

    Each (day, sex) has a capacity of RNOKPP serials (at most 5,000) proportional to how
    many account holders of that age and sex there are; slot p of all slots is found by
    bisecting the running capacities. An affine permutation of the client id picks the
    slot, so the birth dates follow the age profile and no two clients share a tax number.
    """

    def __init__(self) -> None:
        first = (AS_OF.replace(year=AS_OF.year - 100) - DAY0).days
        last = (AS_OF.replace(year=AS_OF.year - 18) - DAY0).days
        peak = max(
            w * max(s, 1 - s)
            for age in range(18, 101)
            for w in [_interpolate(_AGE_WEIGHT, age)]
            for s in [_interpolate(_FEMALE_SHARE, age)]
        )
        self.starts: list[int] = []
        self.slots: list[tuple[int, bool]] = []
        total = 0
        for day in range(first, last + 1):
            age = (AS_OF_DAY - day) / 365.25
            weight, female = _interpolate(_AGE_WEIGHT, age), _interpolate(_FEMALE_SHARE, age)
            for male, share in ((False, female), (True, 1 - female)):
                capacity = min(5000, int(5000 * weight * share / peak))
                if capacity:
                    self.starts.append(total)
                    self.slots.append((day, male))
                    total += capacity
        self.size = total


@cache
def _births() -> _Births:
    return _Births()


# Client ids must stay inside the smallest code space derived from them: ID-card
# numbers (9 digits, 00xxxxxxx-01xxxxxxx like the cards issued so far).
_ID_CARDS: Final = 20_000_000


def max_clients() -> int:
    """The most clients the seeder can generate with unique documents and tax numbers."""
    return min(_births().size, _ID_CARDS)


class Person(NamedTuple):
    """A client or contact person as later rows need them."""

    male: bool
    birth_day: int
    year: int
    surname: str  # male form; feminine_surname gives the female one
    first: str
    middle: str


class People:
    """Writes client, contact, link and consent rows for one chunk, from the chunk's RNG."""

    def __init__(
        self,
        seed: int,
        topics: tuple[str, ...],
        rng: random.Random,
        clients: list[str],
        contacts: list[str],
        links: list[str],
        consents: list[str],
    ) -> None:
        self._rand = rng.random
        self._clients, self._contacts, self._links, self._consents = (
            clients,
            contacts,
            links,
            consents,
        )
        self._births = _births()
        key = random.Random(derive_seed(seed, "births"))
        size = self._births.size
        mult = key.randrange(size // 3, 2 * size // 3) | 1
        while math.gcd(mult, size) != 1:
            mult += 2
        self._birth_mult, self._birth_add = mult, key.randrange(size)
        self._booklet = Permutation(10_000, 10_000, derive_seed(seed, "booklet"))
        self._id_card = Permutation(_ID_CARDS // 10_000, 10_000, derive_seed(seed, "id_card"))
        self._phone = Permutation(12_000, 10_000, derive_seed(seed, "phone"))
        self._surnames = weighted_table(names.SURNAMES)
        self._female = {s: names.feminine_surname(s) for s, _ in names.SURNAMES}
        self._given = {
            (male, era): weighted_table(
                (n, w[era]) for n, *w in (names.MALE_NAMES if male else names.FEMALE_NAMES)
            )
            for male in (False, True)
            for era in range(3)
        }
        self._patronymics = {
            era: weighted_table(((m, f), w[era]) for m, f, *w in names.PATRONYMICS)
            for era in range(3)
        }
        self._apostrophes = weighted_table(names.APOSTROPHES)
        latin = (
            [s for s, _ in names.SURNAMES]
            + list(self._female.values())
            + [n for n, *_ in names.MALE_NAMES + names.FEMALE_NAMES]
        )
        self._latin = {w: names.transliterate(w) for w in latin}
        self._domains = weighted_table(names.EMAIL_DOMAINS)
        self._patterns = weighted_table(_EMAIL_PATTERNS)
        self._consent_rules = [
            (
                channel,
                topic,
                p_in,
                p_out,
                weighted_table(src_in) if src_in else [],
                weighted_table(src_out) if src_out else [],
                needs_email,
            )
            for channel, topic, p_in, p_out, src_in, src_out, needs_email in _CONSENTS
            if topic in topics
        ]

    # -- people -------------------------------------------------------------------------

    def client_person(self, client_id: int) -> tuple[Person, int]:
        """The client's person and the serial of their tax number (from the births bijection)."""
        births = self._births
        slot = (client_id * self._birth_mult + self._birth_add) % births.size
        i = bisect(births.starts, slot) - 1
        day, male = births.slots[i]
        return self._named(male, day), slot - births.starts[i]

    def relative(
        self, of: Person, *, male: bool, years_younger: int, same_surname: bool = True
    ) -> Person:
        """A family member of ``of``: spouse (0 years), child (~28) or parent (~-28)."""
        day = of.birth_day + int((years_younger + (self._rand() - 0.5) * 10) * 365.25)
        day = max(
            0, min(day, AS_OF_DAY - 18 * 366)
        )  # adults; the dead born before 1900 don't matter
        person = self._named(male, day)
        return person._replace(surname=of.surname) if same_surname else person

    def _named(self, male: bool, day: int) -> Person:
        rand = self._rand
        year = int(DAY[day][:4])
        era = 0 if year < 1960 else 1 if year <= 1985 else 2
        given = self._given[(male, era)]
        patronymics = self._patronymics[era]
        pair = patronymics[int(rand() * len(patronymics))]
        return Person(
            male,
            day,
            year,
            self._surnames[int(rand() * len(self._surnames))],
            given[int(rand() * len(given))],
            pair[0] if male else pair[1],
        )

    def _spelled(self, person: Person) -> tuple[str, str, str]:
        """Last, first and middle name as written in one record (one apostrophe variant)."""
        last = person.surname if person.male else self._female[person.surname]
        first, middle = person.first, person.middle
        if "'" in last or "'" in first or "'" in middle:
            mark = self._apostrophes[int(self._rand() * len(self._apostrophes))]
            last, first, middle = (
                last.replace("'", mark),
                first.replace("'", mark),
                middle.replace("'", mark),
            )
        return last, first, middle

    # -- rows -----------------------------------------------------------------------------

    def client(
        self, client_id: int, person: Person, serial: int, created_day: int, addresses: list[str]
    ) -> None:
        """Write the client row; ``addresses`` are those of its accounts (for the search keys)."""
        rand = self._rand
        last, first, middle = self._spelled(person)
        if rand() < 0.015:
            middle = NULL  # documents without a patronymic
        name = f"{last} {first}" + ("" if middle is NULL else f" {middle}")
        keys = client_search_keys(search_norm(name), [search_norm(a) for a in addresses])
        if rand() < 0.07:
            passport = NULL
        elif person.year >= 2002 or rand() < (0.45 if person.year >= 1985 else 0.15):
            passport = f"{self._id_card(client_id):09d}"
        else:
            p = self._booklet(client_id)
            letters = _BOOKLET_LETTERS[p // 10_000_000] + _BOOKLET_LETTERS[p // 1_000_000 % 10]
            passport = f"{letters}{' ' if rand() < 0.08 else ''}{p % 1_000_000:06d}"
        tax = tax_id(person.birth_day + _TAX_DAY0, serial, person.male) if rand() < 0.9 else NULL
        birth = DAY[person.birth_day] if rand() < 0.96 else NULL
        updated = created_day + int(rand() * (AS_OF_DAY - created_day + 1))
        self._clients.append(
            R.join(
                (
                    str(client_id),
                    last,
                    first,
                    middle,
                    birth,
                    passport,
                    tax,
                    DAY[created_day] + CLOCK[int(rand() * 86_400)],
                    DAY[updated] + CLOCK[int(rand() * 86_400)],
                    "{" + ",".join(map(str, keys)) + "}",
                )
            )
            + "\n"
        )

    def email(self, person: Person, last: str) -> str:
        """A plausible personal e-mail address for ``person``."""
        rand = self._rand
        latin = self._latin
        f, lname = latin[person.first], latin[last]
        local = _email_local(
            self._patterns[int(rand() * len(self._patterns))],
            f,
            lname,
            person.year,
            int(rand() * 999) + 1,
        )
        if rand() < 0.03:
            local = local.capitalize()
        return f"{local}@{self._domains[int(rand() * len(self._domains))]}"

    def contact(
        self,
        contact_id: int,
        client_id: int,
        person: Person | None,
        created_day: int,
        *,
        phone: float,
        email: float,
        active: bool = True,
        middle: bool = True,
        phone_override: str | None = None,
    ) -> tuple[str | None, bool]:
        """Write a contact row; return its phone (or None) and whether it has an e-mail."""
        rand = self._rand
        created_day = min(created_day, AS_OF_DAY)
        has_phone = rand() < phone
        has_email = person is not None and rand() < email
        if not has_phone and not has_email:
            has_phone = True  # the CHECK wants one of them, and a phone is the usual one
        number = (phone_override or mobile_phone(self._phone(contact_id))) if has_phone else None
        if person is None:
            last = first = mid = NULL
            address = NULL
        else:
            last, first, mid = self._spelled(person)
            if not middle or rand() < 0.1:
                mid = NULL
            address = (
                self.email(person, person.surname if person.male else self._female[person.surname])
                if has_email
                else NULL
            )
        updated = created_day + int(rand() * (AS_OF_DAY - created_day + 1))
        self._contacts.append(
            R.join(
                (
                    str(contact_id),
                    str(client_id),
                    last,
                    first,
                    mid,
                    number or NULL,
                    address,
                    "t" if active else "f",
                    DAY[created_day] + CLOCK[int(rand() * 86_400)],
                    DAY[updated] + CLOCK[int(rand() * 86_400)],
                )
            )
            + "\n"
        )
        return number, has_email

    def link(
        self,
        account_id: int,
        contact_id: int,
        role: str,
        day: int,
        *,
        unlinked_day: int | None = None,
    ) -> None:
        """Write an account-contact link, made on ``day``; unlinked (inactive) if ``unlinked_day``."""
        rand = self._rand
        day = min(day, AS_OF_DAY)
        unlinked = (
            NULL
            if unlinked_day is None
            else (DAY[max(day, min(unlinked_day, AS_OF_DAY))] + CLOCK[int(rand() * 86_400)])
        )
        self._links.append(
            R.join(
                (
                    str(account_id),
                    str(contact_id),
                    role,
                    "t" if unlinked is NULL else "f",
                    DAY[day] + CLOCK[int(rand() * 86_400)],
                    unlinked,
                )
            )
            + "\n"
        )

    def consents(self, client_id: int, has_email: bool, since_day: int) -> None:
        """Write the client's explicit consent choices (most clients have none)."""
        rand = self._rand
        for channel, topic, p_in, p_out, src_in, src_out, needs_email in self._consent_rules:
            if needs_email and not has_email:
                continue
            r = rand()
            if r < p_in:
                opted, sources = "t", src_in
            elif r < p_in + p_out:
                opted, sources = "f", src_out
            else:
                continue
            day = since_day + int(rand() * (AS_OF_DAY - since_day + 1))
            self._consents.append(
                R.join(
                    (
                        str(client_id),
                        channel,
                        topic,
                        opted,
                        sources[int(rand() * len(sources))],
                        DAY[day] + CLOCK[int(rand() * 86_400)],
                    )
                )
                + "\n"
            )
