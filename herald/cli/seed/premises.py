"""Rows of gas supply points: accounts (with addresses), their meters and billing snapshots.

One ``Premises`` object writes the rows of one chunk. Shares below are of accounts
unless said otherwise; they aim at a plausible national supplier, not at statistics.
"""

from __future__ import annotations

import random
from bisect import bisect
from datetime import date
from typing import Final, NamedTuple

from herald.cli.seed import geo
from herald.cli.seed.codes import Permutation, derive_seed, eic_code
from herald.cli.seed.sampling import (
    AS_OF_DAY,
    CLOCK,
    DAY,
    cents,
    day_number,
    weighted_table,
)

R: Final = "\t"
NULL: Final = "\\N"

# Consumer types: (type, weight) for flats and for private houses; the rare
# non-household types are drawn separately.
_FLAT_TYPES: Final = (("household", 80), ("household_heating", 20))
_HOUSE_TYPES: Final = (("household_heating", 88), ("household", 12))
_SPECIAL_TYPES: Final = (("condominium", 0.003), ("budget", 0.0006), ("religious", 0.0004))
_HOUSEHOLD_TARIFFS: Final = (
    ("household_fixed", 82),
    ("household_annual", 14),
    ("household_monthly", 4),
)
_SPECIAL_TARIFF: Final = {
    "condominium": "condominium",
    "budget": "household_monthly",
    "religious": "household_monthly",
}

# (model, size class, verification interval in years) by use.
_SMALL_METERS: Final = (
    (("Самгаз G1.6", "G1.6", 8), 30),
    (("Октава G2.5", "G2.5", 8), 25),
    (("Elster BK-G2.5", "G2.5", 10), 20),
    (("Metrix G1.6", "G1.6", 10), 10),
    (("Itron G1.6 RF1", "G1.6", 10), 5),
    (("Elster BK-G4", "G4", 10), 10),
)
_HEATING_METERS: Final = (
    (("Elster BK-G4", "G4", 10), 35),
    (("Itron G4 RF1", "G4", 10), 20),
    (("Metrix G4", "G4", 10), 20),
    (("Октава G4", "G4", 8), 8),
    (("Elster BK-G6", "G6", 10), 9),
    (("Metrix G6", "G6", 10), 5),
    (("Itron G6 RF1", "G6", 10), 3),
)
_LARGE_METERS: Final = (
    (("Elster BK-G10", "G10", 10), 50),
    (("Elster BK-G6", "G6", 10), 30),
    (("Itron G10 RF1", "G10", 10), 20),
)
# October use in m³ (lowest, highest) by consumer type and dwelling.
_USE: Final = {
    ("household", False): (6, 28),
    ("household", True): (8, 40),
    ("household_heating", False): (30, 110),
    ("household_heating", True): (60, 240),
    ("condominium", False): (1500, 12000),
    ("budget", True): (400, 3500),
    ("religious", True): (150, 1400),
}
_PERIOD: Final = day_number(date(2026, 10, 1))  # the last billed month
_DUE: Final = day_number(date(2026, 11, 20))  # its payment deadline
_REMOVED_FROM: Final = day_number(date(1998, 1, 1))  # install dates of meters since replaced
_ACTIVE_FROM: Final = day_number(date(2008, 1, 1))  # ... and of meters in service

# Opening dates: (first day, last day, weight). Most accounts date from one mass
# transfer of household customers to the supplier (modelled as May-June 2021); the rest
# trickle in before and after.
_OPENED: Final = (
    (date(2016, 1, 1), date(2021, 4, 30), 8),
    (date(2021, 5, 1), date(2021, 6, 30), 45),
    (date(2021, 7, 1), date(2022, 12, 31), 22),
    (date(2023, 1, 1), date(2025, 12, 31), 20),
    (date(2026, 1, 1), date(2026, 10, 25), 5),
)


class Account(NamedTuple):
    """What later rows of the same client need to know about an account."""

    id: int
    house: bool
    consumer_type: str
    status: str
    opened_day: int
    created_day: int
    price: int  # tariff, kopecks per m³
    poor: bool  # on the subsidy or vulnerable register: more likely in debt
    address: str  # city, street, building and flat, as accounts.address_search joins them


class Premises:
    """Writes account, meter and billing rows for one chunk, from the chunk's RNG."""

    def __init__(
        self,
        seed: int,
        regions: tuple[str, ...],
        tariffs: dict[str, float],
        rng: random.Random,
        accounts: list[str],
        meters: list[str],
        billing: list[str],
    ) -> None:
        self._rand = rng.random
        self._accounts, self._meters, self._billing = accounts, meters, billing
        self._or = Permutation(90_000, 100_000, derive_seed(seed, "or_number"))
        self._eic = Permutation(1_000_000, 100_000, derive_seed(seed, "eic"))
        self._serial = Permutation(10_000, 10_000, derive_seed(seed, "meter_serial"))
        oblasts = [o for o in geo.OBLASTS if o.code in regions and o.weight > 0]
        if not oblasts:
            raise ValueError("none of the seeder's oblasts is in the regions table")
        self._oblasts = weighted_table(((o, o.weight) for o in oblasts), 20_000)
        self._by_code = {o.code: o for o in oblasts}
        self._cities = {
            o.code: weighted_table(
                ((district, city, prefix or geo.postal_prefix(o, city), i == 0 and j == 0), pop)
                for i, (district, cities) in enumerate(o.districts)
                for j, (city, pop, prefix) in enumerate(cities)
            )
            for o in oblasts
        }
        self._city_streets = weighted_table(geo.CITY_STREETS)
        self._village_streets = weighted_table(geo.VILLAGE_STREETS)
        self._flat_types = weighted_table(_FLAT_TYPES)
        self._house_types = weighted_table(_HOUSE_TYPES)
        household = [(code, w) for code, w in _HOUSEHOLD_TARIFFS if code in tariffs]
        if not household:
            raise ValueError("the tariffs table has none of the household tariffs")
        self._household_tariffs = weighted_table(household)
        self._special_tariff = {
            t: (c if c in tariffs else household[0][0]) for t, c in _SPECIAL_TARIFF.items()
        }
        self._price = {
            code: round(price * 100) for code, price in tariffs.items()
        }  # kopecks per m³
        self._small = weighted_table(_SMALL_METERS)
        self._heating = weighted_table(_HEATING_METERS)
        self._large = weighted_table(_LARGE_METERS)
        self._opened = [(day_number(a), day_number(b)) for a, b, _ in _OPENED]
        self._opened_cum = [sum(w for *_, w in _OPENED[: i + 1]) for i in range(len(_OPENED))]

    def home_region(self) -> str:
        """The oblast of a client's main account."""
        return self._oblasts[int(self._rand() * len(self._oblasts))].code

    def account(
        self, account_id: int, client_id: int, region: str, secondary: bool, birth_year: int
    ) -> Account:
        """Write one account row; ``secondary`` accounts are dachas and inherited homes."""
        rand = self._rand
        oblast = self._by_code[region]
        if secondary and oblast.rural and rand() < 0.65:
            village = True  # a dacha or the parents' village house (Kyiv city has none)
        else:
            village = rand() < oblast.rural
        if village:
            district = oblast.districts[int(rand() * len(oblast.districts))][0]
            name = geo.VILLAGES[int(rand() * len(geo.VILLAGES))]
            city = "с. " + name
            postal = geo.postal_prefix(oblast, name)
            house = rand() < 0.98
            street = self._village_streets[int(rand() * len(self._village_streets))]
        else:
            district, city, postal, centre = self._cities[region][
                int(rand() * len(self._cities[region]))
            ]
            house = rand() >= (0.93 if region == "UA-30" else 0.75 if centre else 0.5)
            street = self._city_streets[int(rand() * len(self._city_streets))]
        r = rand()
        special = None
        for kind, share in _SPECIAL_TYPES:
            if r < share:
                special = kind
                break
            r -= share
        if special == "condominium":
            house, consumer = False, special
        elif special is not None:
            house, consumer = True, special
        else:
            types = self._house_types if house else self._flat_types
            consumer = types[int(rand() * len(types))]
        if house:
            number = int(rand() ** 1.6 * 180) + 1
            building = f"{number}{'АБВ'[int(rand() * 3)]}" if rand() < 0.05 else str(number)
            flat = NULL
        else:
            number = int(rand() ** 1.4 * 120) + 1
            r = rand()
            building = (
                f"{number}{'АБВГ'[int(rand() * 4)]}"
                if r < 0.07
                else f"{number}/{int(rand() * 4) + 1}"
                if r < 0.10
                else str(number)
            )
            flat = NULL if consumer == "condominium" else str(int(rand() ** 1.3 * 240) + 1)
        tariff = (
            self._special_tariff[consumer]
            if special
            else self._household_tariffs[int(rand() * len(self._household_tariffs))]
        )
        registers = []
        old = birth_year < 1962
        if consumer in ("household", "household_heating"):
            if rand() < (0.20 if house else 0.09):
                registers.append("subsidy")
            if rand() < (0.16 if old else 0.04):
                registers.append("benefit")
            if not secondary and rand() < oblast.idp:
                registers.append("idp")
            if not old and rand() < 0.025:
                registers.append("large_family")
            if rand() < (0.05 if old else 0.02):
                registers.append("vulnerable")
        destroyed = rand() < oblast.destroyed * (1.3 if village else 0.9)
        occupied = region in ("UA-09", "UA-14") and rand() < 0.5
        status = (
            "suspended"
            if occupied or (destroyed and rand() < 0.6)
            else "closed"
            if rand() < 0.02
            else "suspended"
            if rand() < 0.01
            else "active"
        )
        j = bisect(self._opened_cum, rand() * self._opened_cum[-1])
        first, last = self._opened[j]
        opened = first + int(rand() * (last - first + 1))
        created = min(AS_OF_DAY, opened + (0 if rand() < 0.7 else int(rand() * 20)))
        closed = NULL
        if status == "closed":
            closed = DAY[
                min(AS_OF_DAY, opened + 30 + int(rand() * max(1, AS_OF_DAY - opened - 30)))
            ]
        updated = min(AS_OF_DAY, created + int(rand() * (AS_OF_DAY - created + 1)))
        ordinal = self._or(account_id)
        self._accounts.append(
            R.join(
                (
                    str(account_id),
                    str(client_id),
                    str(1_000_000_000 + ordinal),
                    eic_code(self._eic(account_id)),
                    region,
                    district,
                    city,
                    street,
                    building,
                    flat,
                    f"{postal}{int(rand() * 100):02d}",
                    consumer,
                    "{" + ",".join(registers) + "}",
                    "t" if destroyed else "f",
                    tariff,
                    status,
                    DAY[opened],
                    closed,
                    DAY[created] + CLOCK[int(rand() * 86_400)],
                    DAY[updated] + CLOCK[int(rand() * 86_400)],
                )
            )
            + "\n"
        )
        poor = "subsidy" in registers or "vulnerable" in registers
        address = f"{city} {street} {building}" + ("" if flat is NULL else f" {flat}")
        return Account(
            account_id, house, consumer, status, opened, created, self._price[tariff], poor, address
        )

    def meters(self, account: Account, first_meter_id: int, count: int) -> None:
        """Write the meter rows of an account: the active one and, if two, a removed or second one."""
        rand = self._rand
        if account.consumer_type in ("condominium", "budget"):
            table = self._large
        elif account.consumer_type == "household" and not account.house:
            table = self._small
        else:
            table = self._heating
        for k in range(count):
            meter_id = first_meter_id + k
            model, size, interval = table[int(rand() * len(table))]
            removed = k == 1 and rand() < 0.7
            if removed:  # the meter replaced by the active one
                installed = _REMOVED_FROM + int(rand() * 6000)
            else:
                installed = _ACTIVE_FROM + int(rand() * (AS_OF_DAY - _ACTIVE_FROM - 20))
            if rand() < 0.03:
                verified = NULL
            else:
                years = interval * max(1, -(-(AS_OF_DAY - installed) // (interval * 365)))
                if removed or rand() < 0.15:
                    years = max(interval, years - interval)  # overdue for verification
                verified = DAY[installed + years * 365 + int(rand() * 60)]
            n = self._serial(meter_id)
            serial = (
                f"MX{n:08d}"
                if model.startswith("Metrix")
                else f"{installed // 365 % 100:02d}{n:08d}"
                if model.startswith("Itron")
                else f"{n:08d}"
            )
            created = max(installed, account.created_day)
            self._meters.append(
                R.join(
                    (
                        str(meter_id),
                        str(account.id),
                        serial,
                        model,
                        size,
                        DAY[installed],
                        verified,
                        "removed" if removed else "active",
                        DAY[created] + CLOCK[int(rand() * 86_400)],
                    )
                )
                + "\n"
            )

    def billing(self, account: Account) -> bool:
        """Write the billing snapshot of an account; return whether it is in debt."""
        rand = self._rand
        low, high = _USE.get((account.consumer_type, account.house), (10, 60))
        price = account.price
        charge = int((low + rand() * (high - low)) * price) if account.status != "closed" else 0
        debtor = rand() < (
            0.45 if account.status == "suspended" else 0.26 if account.poor else 0.17
        )
        if debtor:
            r = rand()
            months = (
                1
                if r < 0.4
                else 2 + int(rand() * 2)
                if r < 0.7
                else 4 + int(rand() * 9)
                if r < 0.9
                else 13 + int(rand() * 36)
            )
            monthly = max(charge, (low + high) // 2 * price // 3)
            debt = max(500, int(months * monthly * (0.6 + rand() * 0.6)))
            balance = -(debt + charge)
            if rand() < 0.4:
                paid_at, paid = NULL, NULL
            else:
                paid_at = DAY[AS_OF_DAY - 45 - int(rand() * 650)]
                paid = cents(int(monthly * (0.3 + rand())))
        else:
            debt = 0
            r = rand()
            balance = (
                -charge
                if r < 0.45
                else int(rand() * 5000)
                if r < 0.75
                else 20_000 + int(rand() ** 2 * 600_000)
            )
            paid_at = DAY[AS_OF_DAY - 1 - int(rand() * 40)]
            paid = cents(max(100, int(charge * (0.8 + rand() * 0.5)) + max(0, balance)))
        fetched = DAY[AS_OF_DAY - int(rand() ** 3 * 21)] + CLOCK[int(rand() * 86_400)]
        if account.status == "closed":
            charge_text, period, due = NULL, NULL, NULL
        else:
            charge_text, period, due = cents(charge), DAY[_PERIOD], DAY[_DUE]
        self._billing.append(
            R.join(
                (
                    str(account.id),
                    cents(balance),
                    cents(debt),
                    charge_text,
                    period,
                    paid,
                    paid_at,
                    due,
                    fetched,
                )
            )
            + "\n"
        )
        return debtor
