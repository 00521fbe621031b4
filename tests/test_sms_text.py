"""SMS text: GSM-7 vs UCS-2, segment counting at the boundaries, Latin transliteration."""

from __future__ import annotations

import pytest

from dispatcher.templating.sms_text import SmsStats, is_gsm7, sms_stats, transliterate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SmsStats("gsm7", 0, 0)),
        ("a" * 160, SmsStats("gsm7", 160, 1)),
        ("a" * 161, SmsStats("gsm7", 161, 2)),
        ("a" * 306, SmsStats("gsm7", 306, 2)),
        ("a" * 307, SmsStats("gsm7", 307, 3)),
        ("a" * 158 + "€", SmsStats("gsm7", 160, 1)),
        ("a" * 159 + "€", SmsStats("gsm7", 161, 2)),
        ("{[~]}" + "a" * 150, SmsStats("gsm7", 160, 1)),
        ("Hello @ £5, Ça va? ÄÖÑÜ§¿ ΔΦΓ\n", SmsStats("gsm7", 30, 1)),
    ],
)
def test_gsm7_counts_septets_and_segments(text: str, expected: SmsStats) -> None:
    # Given a text within the GSM-7 alphabet (extension characters cost two septets)
    # When it is measured
    # Then the encoding, septets and segments are as operators bill them
    assert sms_stats(text) == expected


def test_extension_character_is_not_split_across_segments() -> None:
    # Given 306 septets (2 x 153) where the euro sign falls on the first part's boundary
    text = "a" * 152 + "€" + "a" * 152
    assert sms_stats(text).characters == 306
    # When it is measured
    # Then the escape pair moves to the second part and a third part is needed
    assert sms_stats(text).segments == 3
    # ...while the same length with the euro sign safely inside the first part fits in 2
    assert sms_stats("€" + "a" * 304).segments == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("я" * 70, SmsStats("ucs2", 70, 1)),
        ("я" * 71, SmsStats("ucs2", 71, 2)),
        ("я" * 134, SmsStats("ucs2", 134, 2)),
        ("я" * 135, SmsStats("ucs2", 135, 3)),
        ("a" * 69 + "ç", SmsStats("ucs2", 70, 1)),  # lower-case ç is not GSM-7, Ç is
        ("😀", SmsStats("ucs2", 2, 1)),
        ("я" * 68 + "😀", SmsStats("ucs2", 70, 1)),
        ("я" * 69 + "😀", SmsStats("ucs2", 71, 2)),
    ],
)
def test_ucs2_counts_utf16_units(text: str, expected: SmsStats) -> None:
    # Given a text with Cyrillic, a non-GSM Latin letter or an emoji
    # When it is measured
    # Then it is UCS-2 and an emoji (a surrogate pair) counts two units
    assert sms_stats(text) == expected


def test_surrogate_pair_is_not_split_across_segments() -> None:
    # Given 134 units (2 x 67) with an emoji straddling the first part's boundary
    text = "я" * 66 + "😀" + "я" * 66
    assert sms_stats(text).characters == 134
    # When it is measured
    # Then the emoji moves whole to the second part and a third part is needed
    assert sms_stats(text).segments == 3


def test_one_cyrillic_letter_makes_the_whole_text_ucs2() -> None:
    # Given a Latin text long enough for 2 GSM-7 parts, with one Cyrillic letter
    text = "Your bill is ready " * 8 + "є"
    # When it is measured
    stats = sms_stats(text)
    # Then all of it goes as UCS-2 and costs 3 parts instead of 1
    assert (stats.encoding, stats.segments) == ("ucs2", 3)
    assert not is_gsm7(text) and is_gsm7(text[:-1])


def test_ukrainian_apostrophes_are_ucs2_characters_like_any_other() -> None:
    # Given a name with each of the apostrophes Ukrainians type
    for name in ("Мар'яна", "Марʼяна", "Мар’яна"):
        # When measured, Then each is 7 UTF-16 units in one part
        assert sms_stats(name) == SmsStats("ucs2", 7, 1)


@pytest.mark.parametrize(
    ("cyrillic", "latin"),
    [
        # Examples from the table of CMU resolution No. 55 (27.01.2010).
        ("Алушта", "Alushta"),
        ("Андрій", "Andrii"),
        ("Борщагівка", "Borshchahivka"),
        ("Вінниця", "Vinnytsia"),
        ("Гадяч", "Hadiach"),
        ("Згорани", "Zghorany"),
        ("Розгон", "Rozghon"),
        ("Згурський", "Zghurskyi"),
        ("Ґалаґан", "Galagan"),
        ("Ґорґани", "Gorgany"),
        ("Донецьк", "Donetsk"),
        ("Єнакієве", "Yenakiieve"),
        ("Гаєвич", "Haievych"),
        ("Короп'є", "Koropie"),
        ("Житомир", "Zhytomyr"),
        ("Закарпаття", "Zakarpattia"),
        ("Їжакевич", "Yizhakevych"),
        ("Кадиївка", "Kadyivka"),
        ("Мар'їне", "Marine"),
        ("Йосипівка", "Yosypivka"),
        ("Стрий", "Stryi"),
        ("Олексій", "Oleksii"),
        ("Київ", "Kyiv"),
        ("Миколаїв", "Mykolaiv"),
        ("Наталія", "Nataliia"),
        ("Рибчинський", "Rybchynskyi"),
        ("Соломія", "Solomiia"),
        ("Тернопіль", "Ternopil"),
        ("Троць", "Trots"),
        ("Ужгород", "Uzhhorod"),
        ("Уляна", "Uliana"),
        ("Харків", "Kharkiv"),
        ("Біла Церква", "Bila Tserkva"),
        ("Чернівці", "Chernivtsi"),
        ("Шевченко", "Shevchenko"),
        ("Щербухи", "Shcherbukhy"),
        ("Гоща", "Hoshcha"),
        ("Юрій", "Yurii"),
        ("Корюківка", "Koriukivka"),
        ("Яготин", "Yahotyn"),
        ("Ярошенко", "Yaroshenko"),
        ("Костянтин", "Kostiantyn"),
        ("Знам'янка", "Znamianka"),
        ("Феодосія", "Feodosiia"),
    ],
)
def test_ukrainian_national_transliteration(cyrillic: str, latin: str) -> None:
    # Given a word from the official table
    # When transliterated with the Ukrainian table
    # Then it reads exactly as the resolution prescribes
    assert transliterate(cyrillic, "uk") == latin


@pytest.mark.parametrize(
    ("cyrillic", "latin"),
    [
        ("Мар'яна", "Mariana"),
        ("Марʼяна", "Mariana"),
        ("Мар’яна", "Mariana"),
        ("ЮРІЙ ЩУКА", "YURII SHCHUKA"),
        ("МАР'ЯНА", "MARIANA"),
        ("ЗГОРАНИ", "ZGHORANY"),
        ("ПОДВІР'Я", "PODVIRIA"),
        ("Щ", "Shch"),
        ("'Ярошенко'", "'Yaroshenko'"),
        ("Іван-Юрій", "Ivan-Yurii"),
    ],
)
def test_apostrophes_and_capitals(cyrillic: str, latin: str) -> None:
    # Given apostrophes of every kind inside words, all-capital words, quotes and hyphens
    # When transliterated
    # Then apostrophes inside a word vanish, capitals stay capitals, a quote or hyphen starts a word
    assert transliterate(cyrillic) == latin


def test_transliterated_sms_becomes_gsm7_and_cheaper() -> None:
    # Given a typical Ukrainian debt SMS with typographic quotes, a dash and no-break spaces
    text = (
        "Шановна Мар'яно! Борг за ОР №0412345678 — 1\u00a0234,50\u00a0грн. "
        "Сплатіть до 25.12.2026 у застосунку «Нафтогаз»."
    )
    # When it is transliterated
    latin = transliterate(text, "uk")
    # Then it is plain GSM-7 and costs one part instead of two
    assert latin == (
        "Shanovna Mariano! Borh za OR No0412345678 - 1 234,50 hrn. "
        'Splatit do 25.12.2026 u zastosunku "Naftohaz".'
    )
    assert sms_stats(text).segments == 2
    assert sms_stats(latin) == SmsStats("gsm7", len(latin), 1)


@pytest.mark.parametrize(
    ("georgian", "latin"),
    [
        ("თბილისი", "tbilisi"),
        ("მეღვინეთუხუცესი", "meghvinetukhutsesi"),
        ("ჭიანჭველა", "ch'ianch'vela"),
        ("ბაყაყი", "baq'aq'i"),
        ("მცხეთა", "mtskheta"),
        ("ქუთაისი", "kutaisi"),
        ("ჟურნალი", "zhurnali"),
        ("ძმა", "dzma"),
        ("წყალი", "ts'q'ali"),
        ("ᲗᲑᲘᲚᲘᲡᲘ", "TBILISI"),
        ("გადასახადი 25 ₾", "gadasakhadi 25 ₾"),
    ],
)
def test_georgian_national_transliteration(georgian: str, latin: str) -> None:
    # Given Georgian text (Mkhedruli, or Mtavruli capitals)
    # When transliterated with the Georgian table (national system, ejectives with ')
    # Then it reads as the national system prescribes; other characters pass through
    assert transliterate(georgian, "ka") == latin


def test_unknown_table_is_refused() -> None:
    # Given a table name that is not "uk" or "ka", When used, Then it is refused outright
    with pytest.raises(ValueError, match="unknown transliteration table"):
        transliterate("текст", "ru")  # type: ignore[arg-type]  # a bad value on purpose
