"""A deterministic synthetic Arabic corpus in the nested Wojood format.

The real WojoodNER corpus is distributed on request only, so tests, benchmarks and demos need a stand-in
with the same shape: all 21 entity types, Wojood-like nesting (a GPE inside an ORG inside an OCC, a DATE
inside an EVENT, a CURR inside a MONEY, a UNIT inside a QUANTITY), tags listed outermost first, mostly
short sentences plus about 1% of very long ones (150-300 tokens) to exercise window splitting. Names are
shared between contexts (a city alone is a GPE, inside "جامعة ..." it is part of an ORG) so a model has
something to learn but cannot just memorise one tag per word.

Everything is drawn from one ``random.Random(seed)`` over ordered tuples: same seed, same corpus.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

from nerlab.models.wojood import Sentence, write_file

# A piece of a sentence: per token, its tags outermost first (empty: outside every entity).
Chunk = list[tuple[str, list[str]]]


def _lex(text: str) -> tuple[str, ...]:
    """A lexicon written as ``a|b c|d``; entries may span several space-separated tokens."""
    return tuple(e.strip() for e in text.split("|") if e.strip())


FIRST = _lex(
    "محمد|أحمد|علي|محمود|خالد|عمر|يوسف|إبراهيم|حسن|حسين|سامي|رامي|فادي|سعيد|ناصر|مصطفى|عبد الله|"
    "عبد الرحمن|ياسر|مروان|هاني|طارق|زياد|كريم|خليل|جمال|وليد|ليلى|فاطمة|مريم|سارة|نور|هدى|رنا|سلمى|"
    "ريم|دينا|أمل|سعاد|خديجة|عائشة|منى|لينا|حنان|رشا|نادية"
)
LAST = _lex(
    "الخطيب|حداد|النجار|الشريف|العلي|منصور|عيسى|البرغوثي|عودة|صالح|السكاكيني|درويش|قاسم|الحسيني|"
    "عبد الهادي|الأسد|ياسين|خليفة|الزعبي|المصري|الحلبي|التميمي|الشامي|عاشور|بدران|الجعبري|غنيم|"
    "الكيلاني|شمس|حمدان|أبو علي|أبو زيد"
)
CITIES = _lex(
    "القدس|رام الله|نابلس|الخليل|غزة|جنين|بيت لحم|أريحا|طولكرم|قلقيلية|بيرزيت|البيرة|عمان|إربد|الزرقاء|"
    "القاهرة|الإسكندرية|بيروت|طرابلس|دمشق|حلب|بغداد|البصرة|الرياض|جدة|الدوحة|دبي|أبوظبي|الرباط|"
    "الدار البيضاء|الخرطوم|صنعاء|مسقط|المنامة|باريس|لندن|برلين|مدريد|واشنطن|نيويورك|موسكو|بكين|"
    "طوكيو|إسطنبول|أنقرة|جنيف|أوسلو"
)
# (country, feminine adjective, people) -- the adjective names ministries, the people are NORP.
COUNTRIES = (
    ("فلسطين", "الفلسطينية", "الفلسطينيون"), ("الأردن", "الأردنية", "الأردنيون"),
    ("مصر", "المصرية", "المصريون"), ("لبنان", "اللبنانية", "اللبنانيون"),
    ("سوريا", "السورية", "السوريون"), ("العراق", "العراقية", "العراقيون"),
    ("السعودية", "السعودية", "السعوديون"), ("المملكة العربية السعودية", "السعودية", "السعوديين"),
    ("قطر", "القطرية", "القطريون"), ("الإمارات", "الإماراتية", "الإماراتيون"),
    ("الكويت", "الكويتية", "الكويتيون"), ("تونس", "التونسية", "التونسيون"),
    ("المغرب", "المغربية", "المغاربة"), ("الجزائر", "الجزائرية", "الجزائريون"),
    ("ليبيا", "الليبية", "الليبيون"), ("السودان", "السودانية", "السودانيون"),
    ("اليمن", "اليمنية", "اليمنيون"), ("فرنسا", "الفرنسية", "الفرنسيون"),
    ("بريطانيا", "البريطانية", "البريطانيون"), ("ألمانيا", "الألمانية", "الألمان"),
    ("الولايات المتحدة", "الأمريكية", "الأمريكيون"), ("روسيا", "الروسية", "الروس"),
    ("الصين", "الصينية", "الصينيون"), ("تركيا", "التركية", "الأتراك"), ("إيران", "الإيرانية", "الإيرانيون"),
)
PLACES = _lex("الأراضي الفلسطينية|الضفة الغربية|قطاع غزة|الأراضي المحتلة")
CAMPS = _lex("جنين|الدهيشة|بلاطة|الأمعري|عين الحلوة|اليرموك|شعفاط")
VILLAGES = _lex("كوبر|عارورة|سلواد|بيتين|دير دبوان|عين يبرود|بيت ساحور")
NORP_PLAIN = _lex(
    "العرب|المسلمون|المسيحيون|اليهود|الأكراد|الدروز|اللاجئون|اللاجئين الفلسطينيين|المستوطنين|الأسرى|"
    "المساهمين|البدو|الشيعة|السنة|الأقباط"
)
NORP_OF = _lex("أهالي|سكان|لاجئي|أبناء|عمال")
RIVERS = _lex("النيل|الفرات|دجلة|الليطاني|العاصي|اليرموك")
MOUNTAINS = _lex("الشيخ|الكرمل|عيبال|جرزيم|طارق|لبنان|الجليل")
LOC_PLAIN = _lex(
    "البحر الأحمر|البحر الميت|البحر الأبيض المتوسط|الخليج العربي|الشرق الأوسط|شمال أفريقيا|"
    "صحراء النقب|وادي عربة|سهل البقاع|شبه جزيرة سيناء|آسيا|أوروبا|أفريقيا|المحيط الأطلسي|بلاد الشام"
)
SIDES = _lex("شمال|جنوب|شرق|غرب|وسط|ريف")
FAC_PLAIN = _lex(
    "المسجد الأقصى|كنيسة القيامة|قبة الصخرة|برج خليفة|كنيسة المهد|الحرم الإبراهيمي|دوار المنارة|"
    "سجن عوفر|ساحة الشهداء|جسر الملك حسين|ملعب فيصل الحسيني|فندق الأمباسادور|قصر الثقافة"
)
HOSPITALS = _lex("المقاصد|الشفاء|رفيديا|المطلع|الاستشاري|الهلال الأحمر|الأهلي")
FIELDS = _lex(
    "الصحة|التربية والتعليم|الخارجية|المالية|الداخلية|الزراعة|الاقتصاد الوطني|العمل|الثقافة|السياحة|"
    "الأشغال العامة|الاتصالات|العدل|الإعلام|الشباب والرياضة"
)
ORG_PLAIN = _lex(
    "مجلس الأمن|الأمم المتحدة|جامعة الدول العربية|منظمة الصحة العالمية|البنك الدولي|صندوق النقد الدولي|"
    "الاتحاد الأوروبي|حركة فتح|حركة حماس|منظمة التحرير الفلسطينية|الصليب الأحمر|وكالة الأونروا|الكونغرس|"
    "السلطة الفلسطينية|مجلس الوزراء|جامعة النجاح الوطنية|قناة الجزيرة|وكالة وفا|صحيفة الأيام|"
    "البورصة الفلسطينية|اللجنة القومية العربية|الجيش الإسرائيلي|داعش|شركة جوال|شركة أرامكو|شركة سامسونج|"
    "شركة تويوتا|جوجل|الهلال الأحمر الفلسطيني|نقابة الصحفيين|سلطة النقد|المجلس التشريعي"
)
ORG_BODY = _lex("الحكومة|الشرطة|البرلمان|الجامعة|المحكمة العليا|هيئة الإذاعة|الإذاعة|النيابة العامة")
OCC_PLAIN = _lex(
    "الطبيب|المهندس|المحامي|الصحفي|المعلم|الكاتب|الشاعر|الرئيس|رئيس الوزراء|الدكتور|د .|الباحث|"
    "الممرضة|الفنان|المخرج|اللاعب|المدرب|الناشط|الأسير|المتحدث الرسمي|الأستاذ|رجل الأعمال"
)
OCC_HEAD = _lex("رئيس|مدير|أمين عام|الناطق باسم|عضو|مستشار|نائب رئيس|رئيس مجلس إدارة")
SUBJECTS = _lex("العلوم السياسية|الاقتصاد|التاريخ|الهندسة المدنية|الكيمياء|القانون|اللغة العربية")
YEARS = tuple(str(y) for y in range(1917, 2025))
MONTHS = _lex(
    "كانون الثاني|شباط|آذار|نيسان|أيار|حزيران|تموز|آب|أيلول|تشرين الأول|تشرين الثاني|كانون الأول|"
    "يناير|فبراير|مارس|أبريل|مايو|يونيو|يوليو|أغسطس|سبتمبر|أكتوبر|نوفمبر|ديسمبر"
)
WEEKDAYS = _lex("السبت|الأحد|الاثنين|الثلاثاء|الأربعاء|الخميس|الجمعة")
DATE_PLAIN = _lex(
    "أمس|الشهر الماضي|العام المقبل|العام الماضي|الأسبوع المقبل|الأسبوع الماضي|العام الجاري|منتصف الشهر|"
    "نهاية العام|القرن العشرين|القرن الماضي|مطلع العام|هذا العام"
)
EVENT_PLAIN = _lex("النكبة|النكسة|عيد الفطر|عيد الأضحى|الانتخابات التشريعية|معركة الكرامة")
HOURS = _lex("الأولى|الثانية|الثالثة|الرابعة|الخامسة|السادسة|السابعة|الثامنة|التاسعة|العاشرة|الحادية عشرة")
DAY_PARTS = _lex("صباحا|مساء|ظهرا|فجرا|ليلا")
TIME_PLAIN = _lex(
    "صباح اليوم|مساء أمس|منتصف الليل|فجر اليوم|ظهر اليوم|صباح هذا اليوم|مساء اليوم|بعد الظهر|حالياً|"
    "ساعات الصباح الأولى|الليلة الماضية"
)
LANGUAGES = _lex(
    "العربية|الإنجليزية|الفرنسية|العبرية|التركية|الإسبانية|الألمانية|الروسية|الصينية|الفارسية|الكردية"
)
SITE_NAMES = _lex("aljazeera|wafa|birzeit|bbc|alquds|maannews|wikipedia|moh|pcbs|najah")
SITE_PLAIN = _lex("فيسبوك|تويتر|يوتيوب|اليوتيوب|جوجل|انستغرام|واتساب|تيك توك|ويكيبيديا")
TLDS = _lex("com|ps|org|net|edu|gov . ps|co . uk")
LAW_KINDS = _lex("العمل|العقوبات|الأحوال الشخصية|الانتخابات|الضمان الاجتماعي|الجرائم الإلكترونية|التقاعد")
LAW_PLAIN = _lex("القانون الدولي|القانون الدولي الإنساني|القانون الأساسي|الإعلان العالمي لحقوق الإنسان")
PRODUCTS = _lex(
    "بندقية كلاشنيكوف|صواريخ غراد|قذائف هاون|هاتف آيفون|آيفون|سامسونج جالاكسي|سيارة تويوتا|سيارة مرسيدس|"
    "سيارة هيونداي|لقاح فايزر|لقاح موديرنا|ويندوز|طائرة بوينغ|طائرة إف|بلايستيشن|ماكينتوش"
)
NUMBER_WORDS = _lex("ثلاثة|خمسة|سبعة|عشرة|عشرين|ثلاثين|مئة|ألف|اثنين|أربعة|عشرات|مئات|آلاف|ستة|تسعة")
ORDINALS = _lex(
    "الأول|الأولى|الثاني|الثانية|الثالث|الثالثة|الرابع|الرابعة|الخامس|الخامسة|العاشر|الأخير|ثانيا|أولا"
)
# (singular unit for small numbers, unit for larger ones); a unit may be several tokens.
UNITS = (
    ("متر", "مترا"), ("م مربع", "م مربع"), ("كيلومتر", "كيلومترا"), ("كغم", "كغم"), ("طن", "طنا"),
    ("لتر", "لترا"), ("دونم", "دونما"), ("ميغاواط", "ميغاواط"), ("هكتار", "هكتارا"), ("غرام", "غراما"),
    ("ميل", "ميلا"), ("برميل", "برميل"), ("سم", "سم"), ("متر مكعب", "متر مكعب"),
)
CURRENCIES = _lex(
    "دولار|دولار أمريكي|شيقل|شيكل|دينار|دينار أردني|يورو|جنيه|جنيه مصري|ريال|ريال سعودي|درهم|ليرة|"
    "ليرة لبنانية|جنيه إسترليني"
)
SCALES = _lex("ألف|مليون|مليار|ملايين|مليارات")
HALF = _lex("نصف|ربع|مليوني|ألفي")
# Clause templates: literal tokens and {TYPE} slots; {WHO} is a person, an office holder or an ORG.
CLAUSES = _lex("""
{WHO} أعلن أن {ORG} ستعقد {EVENT} في {GPE}|
وصل {OCC} {PERS} إلى {GPE} {DATE} في زيارة رسمية تستمر {CARDINAL} أيام|
أكد {WHO} خلال مؤتمر صحفي عقده في {FAC} {TIME} أن {NORP} يعانون من أوضاع صعبة|
بلغت قيمة المشروع {MONEY} بنسبة نمو {PERCENT} مقارنة مع {DATE}|
تبلغ مساحة {LOC} نحو {QUANTITY}|
يقع {FAC} في {GPE} على بعد {QUANTITY} من {LOC}|
أصدرت {ORG} تقريرها السنوي {LANGUAGE} وهو متاح على موقع {WEBSITE}|
وفقا لنص {LAW} فإن {NORP} لهم الحق في العودة|
أطلقت {ORG} منتجها الجديد {PRODUCT} بسعر {MONEY} في أسواق {GPE}|
حصل {PERS} على المركز {ORDINAL} في {EVENT}|
شارك أكثر من {CARDINAL} شخص في {EVENT} الذي أقيم في {FAC}|
ارتفع سعر صرف {CURR} مقابل {CURR} بنسبة {PERCENT} {DATE}|
درس {PERS} {LANGUAGE} في {ORG}|
قال {OCC} إن {ORG} ستخصص {MONEY} لدعم {NORP} في {GPE}|
اجتمع {OCC} {PERS} مع {OCC} {PERS} في {FAC} {TIME} لبحث تطبيق {LAW}|
استمرت {EVENT} حتى {DATE} وشهدت سقوط {CARDINAL} من {NORP}|
يمر {LOC} عبر {GPE} و {GPE}|
نقل {CARDINAL} من {NORP} إلى {FAC} بعد إصابتهم قرب {LOC}|
تم إنتاج {QUANTITY} من القمح في {GPE} خلال {DATE}|
يمكن متابعة البث المباشر عبر {WEBSITE}|
حضر {PERS} و {PERS} حفل افتتاح {FAC}|
قالت {ORG} في بيان لها إن {CARDINAL} من {NORP} اعتقلوا في {GPE} {DATE}|
عاد {PERS} إلى {GPE} {DATE}|
زار {WHO} {ORG} في {GPE}|
يعمل {PERS} {OCC} منذ {DATE}|
صادق {ORG} على {LAW} للمرة {ORDINAL}|
ولد {PERS} في {GPE} {DATE} وعمل {OCC} حتى وفاته|
تراجعت أسعار {PRODUCT} بنسبة {PERCENT} خلال {DATE}|
انطلقت الرحلة من {FAC} {TIME} ووصلت إلى {GPE}|
نظم {ORG} ورشة عمل حول {LAW} بمشاركة {OCC}|
تحدث {PERS} باللغة {LANGUAGE} أمام {NORP}|
يقدر عدد سكان {GPE} بنحو {CARDINAL} نسمة|
تبرعت {ORG} بمبلغ {MONEY} و {QUANTITY} من المواد الغذائية|
أشار {WHO} إلى أن الوضع الاقتصادي صعب ولا يمكن الاستمرار على هذا النحو|
وأضاف أن الحكومة تعمل على حل هذه المشكلة في أقرب وقت ممكن|
من جهة أخرى طالب {NORP} بتحسين ظروف العمل في {GPE}|
ناقش {OCC} مع وفد من {ORG} سبل التعاون المشترك|
{PERS} يزور {GPE}|
انخفضت درجات الحرارة في {LOC} {TIME}|
أوضح {OCC} أن {CARDINAL} طالبا حصلوا على المرتبة {ORDINAL}
""")
OPENERS = _lex("في هذا السياق|من جهة أخرى|وفي وقت لاحق|كما|وبحسب المصادر|وفي سياق متصل|إلى ذلك")
JOINERS = _lex("،|و|، كما|، حيث|، فيما|، في حين")


def _words(text: str) -> Chunk:
    return [(w, []) for w in text.split()]


def _wrap(typ: str, *parts: Chunk) -> Chunk:
    """One entity of ``typ`` over the concatenated parts: its tag goes in front (outermost first)."""
    tokens = [tok for part in parts for tok in part]
    return [(w, [("I-" if i else "B-") + typ, *tags]) for i, (w, tags) in enumerate(tokens)]


class _Generator:
    """Draws entities and sentences from one random stream; one method per entity type."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.slots: dict[str, Callable[[], Chunk]] = {
            "PERS": self.pers, "NORP": self.norp, "OCC": self.occ, "ORG": self.org, "GPE": self.gpe,
            "LOC": self.loc, "FAC": self.fac, "EVENT": self.event, "DATE": self.date, "TIME": self.time,
            "LANGUAGE": self.language, "WEBSITE": self.website, "LAW": self.law, "PRODUCT": self.product,
            "CARDINAL": self.cardinal, "ORDINAL": self.ordinal, "PERCENT": self.percent,
            "QUANTITY": self.quantity, "MONEY": self.money, "CURR": self.curr, "WHO": self.who,
        }
        self.templates = [t.split() for t in CLAUSES]

    def pick(self, options: Sequence[str]) -> Chunk:
        return _words(self.r.choice(options))

    def number(self) -> str:
        r = self.r.random()
        if r < 0.6:
            return str(self.r.randint(2, 999))
        return str(self.r.randint(1000, 90000)) if r < 0.8 else self.r.choice(NUMBER_WORDS)

    # --- people, groups, offices
    def pers(self) -> Chunk:
        name = self.pick(FIRST) + (self.pick(LAST) if self.r.random() < 0.8 else [])
        return _wrap("PERS", name)

    def norp(self) -> Chunk:
        r = self.r.random()
        if r < 0.45:
            return _wrap("NORP", _words(self.r.choice(COUNTRIES)[2]))
        if r < 0.8:
            return _wrap("NORP", self.pick(NORP_PLAIN))
        if r < 0.93:  # "أهالي نابلس": a group named after a place
            return _wrap("NORP", self.pick(NORP_OF), self.gpe())
        return _wrap("NORP", _words("عناصر"), _wrap("ORG", _words("داعش")))

    def occ(self) -> Chunk:
        r = self.r.random()
        if r < 0.3:
            return _wrap("OCC", self.pick(OCC_PLAIN))
        if r < 0.55:  # "وزير الخارجية [الفلسطيني]": the ministry's field is an ORG inside the office
            adj = _words(self.r.choice(COUNTRIES)[1][:-1]) if self.r.random() < 0.3 else []
            return _wrap("OCC", _words("وزير"), _wrap("ORG", self.pick(FIELDS)), adj)
        if r < 0.75:
            return _wrap("OCC", self.pick(OCC_HEAD), self.org())
        if r < 0.85:  # "رئيس بلدية مدينة البيرة": OCC > ORG > GPE
            return _wrap("OCC", _words("رئيس"), _wrap("ORG", _words("بلدية"), self.gpe(city=True)))
        if r < 0.93:
            return _wrap("OCC", _words("سفير"), self.gpe(), _words("لدى"), self.gpe())
        return _wrap("OCC", _words("أستاذ"), self.pick(SUBJECTS), _words("في"), self.org())

    def who(self) -> Chunk:
        r = self.r.random()
        if r < 0.4:
            return self.pers()
        return self.occ() + self.pers() if r < 0.75 else self.org()

    # --- places
    def gpe(self, city: bool = False) -> Chunk:
        r = self.r.random()
        if city or r < 0.45:
            prefix = _words("مدينة") if self.r.random() < 0.15 else []
            return _wrap("GPE", prefix, self.pick(CITIES))
        if r < 0.85:
            return _wrap("GPE", _words(self.r.choice(COUNTRIES)[0]))
        if r < 0.93:
            return _wrap("GPE", self.pick(PLACES))
        kind = self.r.choice(("مخيم", "قرية", "محافظة"))
        return _wrap("GPE", _words(kind), self.pick(CAMPS if kind == "مخيم" else VILLAGES))

    def loc(self) -> Chunk:
        r = self.r.random()
        if r < 0.45:
            return _wrap("LOC", self.pick(LOC_PLAIN))
        if r < 0.6:
            return _wrap("LOC", _words("نهر"), self.pick(RIVERS))
        if r < 0.7:
            return _wrap("LOC", _words("نهر الأردن") if self.r.random() < 0.5 else _words("غور الأردن"))
        if r < 0.8:
            return _wrap("LOC", _words("جبل"), self.pick(MOUNTAINS))
        return _wrap("LOC", self.pick(SIDES), self.gpe())

    def fac(self) -> Chunk:
        r = self.r.random()
        if r < 0.4:
            return _wrap("FAC", self.pick(FAC_PLAIN))
        if r < 0.6:
            return _wrap("FAC", _words("مطار"), self.gpe(city=True), _words("الدولي") if r < 0.5 else [])
        if r < 0.8:
            return _wrap("FAC", _words("مستشفى"), self.pick(HOSPITALS))
        if r < 0.9:
            return _wrap("FAC", _words("مستشفى"), self.gpe(city=True), _words("الحكومي"))
        return _wrap("FAC", _words(self.r.choice(("ميناء", "معبر"))), self.gpe(city=True))

    # --- organisations and events
    def org(self) -> Chunk:
        r = self.r.random()
        if r < 0.3:
            return _wrap("ORG", self.pick(ORG_PLAIN))
        if r < 0.45:
            return _wrap("ORG", _words("جامعة"), self.gpe(city=True))
        if r < 0.6:
            adj = _words(self.r.choice(COUNTRIES)[1]) if self.r.random() < 0.4 else []
            return _wrap("ORG", _words("وزارة"), self.pick(FIELDS), adj)
        if r < 0.68:
            return _wrap("ORG", _words("بنك"), self.gpe())
        if r < 0.76:
            return _wrap("ORG", _words("بلدية"), self.gpe(city=True))
        if r < 0.84:
            return _wrap("ORG", self.pick(ORG_BODY), _words(self.r.choice(COUNTRIES)[1]))
        if r < 0.9:
            return _wrap("ORG", _words("نادي"), self.gpe(city=True), _words("الرياضي"))
        if r < 0.95:  # an ORG inside an ORG
            university = _wrap("ORG", _words("جامعة"), self.gpe(city=True))
            return _wrap("ORG", _words("نقابة العاملين في"), university)
        return _wrap("ORG", _words("غرفة تجارة وصناعة"), self.gpe(city=True))

    def event(self) -> Chunk:
        r = self.r.random()
        if r < 0.2:  # "مؤتمر مدريد للسلام عام 1991"
            return _wrap("EVENT", _words("مؤتمر"), self.gpe(), _words("للسلام"), self.year_date())
        if r < 0.35:
            return _wrap("EVENT", _words("الانتفاضة"), self.first_or_second())
        if r < 0.5:
            return _wrap("EVENT", _words("حرب"), self.year_date())
        if r < 0.6:
            return _wrap("EVENT", _words("كأس العالم"), self.gpe(), _wrap("DATE", self.pick(YEARS)))
        if r < 0.7:
            return _wrap("EVENT", _words("معرض"), self.gpe(city=True), _words("الدولي للكتاب"))
        if r < 0.8:
            return _wrap("EVENT", _words("قمة"), self.org(), _words("في"), self.gpe(city=True))
        if r < 0.87:
            return _wrap("EVENT", _words("الحرب العالمية"), self.first_or_second())
        return _wrap("EVENT", self.pick(EVENT_PLAIN))

    def first_or_second(self) -> Chunk:
        return _wrap("ORDINAL", self.pick(("الأولى", "الثانية")))

    # --- time
    def year_date(self) -> Chunk:
        year = self.r.choice(YEARS)
        return _wrap("DATE", _words(f"عام ( {year} )" if self.r.random() < 0.15 else f"عام {year}"))

    def date(self) -> Chunk:
        r = self.r.random()
        if r < 0.2:
            return _wrap("DATE", _words(self.r.choice(YEARS)))
        if r < 0.4:
            return self.year_date()
        if r < 0.6:
            day = str(self.r.randint(1, 31))
            return _wrap("DATE", _words(day), self.pick(MONTHS), _words(self.r.choice(YEARS)))
        if r < 0.7:
            return _wrap("DATE", self.pick(MONTHS), _words(self.r.choice(YEARS)))
        if r < 0.8:
            return _wrap("DATE", _words("يوم") if r < 0.75 else [], self.pick(WEEKDAYS))
        return _wrap("DATE", self.pick(DATE_PLAIN))

    def time(self) -> Chunk:
        r = self.r.random()
        if r < 0.4:
            part = self.pick(DAY_PARTS) if self.r.random() < 0.7 else []
            return _wrap("TIME", _words("الساعة"), self.pick(HOURS), part)
        if r < 0.55:
            clock = f"{self.r.randint(1, 12)}:{self.r.choice(('00', '15', '30', '45'))}"
            return _wrap("TIME", _words(f"الساعة {clock}"))
        if r < 0.65:
            return _wrap("TIME", _words(f"{self.r.randint(2, 59)}"), self.pick(("دقيقة", "ثانية", "ساعة")))
        return _wrap("TIME", self.pick(TIME_PLAIN))

    # --- language, web, law, products
    def language(self) -> Chunk:
        prefix = self.r.choice(((), ("اللغة",), ("باللغة",), ("باللغة",)))
        return _wrap("LANGUAGE", _words(" ".join(prefix)), self.pick(LANGUAGES))

    def website(self) -> Chunk:
        if self.r.random() < 0.4:
            return _wrap("WEBSITE", self.pick(SITE_PLAIN))
        scheme = self.r.choice(("", "http : / / ", "https : / / "))
        return _wrap("WEBSITE", _words(f"{scheme}www . {self.r.choice(SITE_NAMES)} . {self.r.choice(TLDS)}"))

    def law(self) -> Chunk:
        r = self.r.random()
        if r < 0.25:
            return _wrap("LAW", self.pick(LAW_PLAIN))
        if r < 0.5:
            adj = _words(self.r.choice(COUNTRIES)[1][:-1]) if self.r.random() < 0.5 else []
            return _wrap("LAW", _words("قانون"), self.pick(LAW_KINDS), adj)
        if r < 0.65:  # "المادة ( 46 )": the article number is an ORDINAL inside the LAW
            article = _wrap("ORDINAL", _words(str(self.r.randint(1, 120))))
            return _wrap("LAW", _words("المادة ("), article, _words(")"))
        if r < 0.8:
            number = _wrap("ORDINAL", _words(str(self.r.randint(181, 2700))))
            return _wrap("LAW", _words("قرار"), _wrap("ORG", _words("مجلس الأمن")), _words("رقم"), number)
        if r < 0.9:
            return _wrap("LAW", _words("اتفاقية"), self.gpe(city=True))
        geneva, fourth = _wrap("GPE", _words("جنيف")), _wrap("ORDINAL", _words("الرابعة"))
        return _wrap("LAW", _words("اتفاقية"), geneva, fourth)

    def product(self) -> Chunk:
        model = _words(str(self.r.randint(5, 16))) if self.r.random() < 0.2 else []
        return _wrap("PRODUCT", self.pick(PRODUCTS), model)

    # --- numbers
    def cardinal(self) -> Chunk:
        return _wrap("CARDINAL", _words(self.number()))

    def ordinal(self) -> Chunk:
        return _wrap("ORDINAL", self.pick(ORDINALS))

    def percent(self) -> Chunk:
        n = f"{self.r.randint(1, 99)}" + (f".{self.r.randint(1, 9)}" if self.r.random() < 0.3 else "")
        form = self.r.choice(("{} %", "{} بالمئة", "{} في المئة", "%{}"))
        return _wrap("PERCENT", _words(form.format(n)))

    def quantity(self) -> Chunk:
        n = self.r.randint(2, 5000)
        unit = self.r.choice(UNITS)[0 if n < 11 else 1]
        scale = self.pick(SCALES[:3]) if self.r.random() < 0.1 else []
        return _wrap("QUANTITY", _words(str(n)), scale, _wrap("UNIT", _words(unit)))

    def money(self) -> Chunk:
        r = self.r.random()
        if r < 0.15:
            amount = self.pick(HALF) + (self.pick(SCALES[:3]) if self.r.random() < 0.5 else [])
        else:
            amount = _words(self.number()) + (self.pick(SCALES) if self.r.random() < 0.4 else [])
        return _wrap("MONEY", amount, self.curr())

    def curr(self) -> Chunk:
        return _wrap("CURR", self.pick(CURRENCIES))

    # --- sentences
    def clause(self) -> Chunk:
        out: Chunk = []
        for word in self.r.choice(self.templates):
            out += self.slots[word[1:-1]]() if word.startswith("{") else [(word, [])]
        return out

    def sentence(self) -> Sentence:
        """1-4 clauses and 5-60 tokens; about 1% run on to 150-300 tokens to exercise windowing."""
        if self.r.random() < 0.01:
            min_len, min_clauses, limit = self.r.randint(150, 270), 1, 300
        else:
            min_len, min_clauses, limit = 5, self.r.choice((1, 1, 1, 1, 2, 2, 2, 3, 3, 4)), 60
        chunk: Chunk = self.pick(OPENERS) if self.r.random() < 0.15 else []
        clauses = 0
        while clauses < min_clauses or len(chunk) < min_len:
            glue = self.pick(JOINERS) if clauses else []
            nxt = glue + self.clause()
            if len(chunk) + len(nxt) + 2 > limit:  # +2: room for ". $#$"
                if clauses and len(chunk) >= min_len:
                    break
                continue
            chunk += nxt
            clauses += 1
        chunk += _words(". $#$" if self.r.random() < 0.05 else ".")
        return Sentence([w for w, _ in chunk], [tags or ["O"] for _, tags in chunk])


def synth_sentences(n: int, seed: int) -> list[Sentence]:
    """``n`` synthetic nested sentences; the same seed always gives the same sentences."""
    gen = _Generator(seed)
    return [gen.sentence() for _ in range(n)]


def write_corpus(
    out_dir: str | Path, sentences_total: int, seed: int, split: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, Path]:
    """Write ``train.txt``, ``val.txt`` and ``test.txt`` (Wojood nested format) split by ``split``."""
    if len(split) != 3 or any(p < 0 for p in split) or abs(sum(split) - 1) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {split}")
    sentences = synth_sentences(sentences_total, seed)
    n_train = round(split[0] * sentences_total)
    n_val = round(split[1] * sentences_total)
    parts = {
        "train": sentences[:n_train],
        "val": sentences[n_train:n_train + n_val],
        "test": sentences[n_train + n_val:],
    }
    if not all(parts.values()):
        raise ValueError(f"{sentences_total} sentences leave a split empty under {split}")
    paths = {}
    for name, part in parts.items():
        paths[name] = Path(out_dir) / f"{name}.txt"
        write_file(paths[name], part)
    return paths
