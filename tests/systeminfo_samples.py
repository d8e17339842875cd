"""``systeminfo`` outputs in the layout Windows prints, written for these tests (not copied from anywhere).

Each language labels the same fields in the same order; values start at one shared column. The
hotfix lists are those of two real servers described in the issue tracker: a Windows Server 2016 whose
newest cumulative update is KB4483229 (December 2018) and a Windows Server 2019 at KB4480116
(January 2019).
"""

from __future__ import annotations

WS2016_HOTFIXES = ("KB4049065", "KB4091664", "KB4132216", "KB4465659", "KB4483229")
WS2019_HOTFIXES = ("KB4462930", "KB4470788", "KB4480056", "KB4480979", "KB4480116")

# (host, OS name, OS version, manufacturer, configuration, boot time, organisation, hotfix, network) labels,
# then the version's "N/A Build" wording and the hotfix count sentence.
LANGUAGES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "en": (
        (
            "Host Name",
            "OS Name",
            "OS Version",
            "OS Manufacturer",
            "OS Configuration",
            "System Boot Time",
            "Registered Organization",
            "Hotfix(s)",
            "Network Card(s)",
        ),
        "N/A Build",
        "{n} Hotfix(s) Installed.",
    ),
    "de": (
        (
            "Hostname",
            "Betriebssystemname",
            "Betriebssystemversion",
            "Betriebssystemhersteller",
            "Betriebssystemkonfiguration",
            "Systemstartzeit",
            "Registrierte Organisation",
            "Hotfix(es)",
            "Netzwerkkarte(n)",
        ),
        "Nicht zutreffend Build",
        "{n} Hotfix(e) installiert.",
    ),
    "fr": (
        (
            "Nom de l'hôte",
            "Nom du système d'exploitation",
            "Version du système",
            "Fabricant du système d'exploitation",
            "Configuration du système d'exploitation",
            "Heure de démarrage du système",
            "Organisation enregistrée",
            "Correctif(s)",
            "Carte(s) réseau",
        ),
        "N/A version",
        "{n} Corrections installées.",
    ),
    "es": (
        (
            "Nombre de host",
            "Nombre del sistema operativo",
            "Versión del sistema operativo",
            "Fabricante del sistema operativo",
            "Configuración del sistema operativo",
            "Tiempo de arranque del sistema",
            "Organización registrada",
            "Revisión(es)",
            "Tarjeta(s) de red",
        ),
        "N/D Compilación",
        "{n} revisión(es) instaladas.",
    ),
    "ru": (
        (
            "Имя узла",
            "Название ОС",
            "Версия ОС",
            "Изготовитель ОС",
            "Параметры ОС",
            "Время загрузки системы",
            "Зарегистрированная организация",
            "Исправление(я)",
            "Сетевые адаптеры",
        ),
        "Н/Д построение",
        "Число установленных исправлений - {n}.",
    ),
}
ENCODINGS = {"en": "utf-16", "de": "cp850", "fr": "cp850", "es": "cp850", "ru": "cp866"}


def systeminfo_text(language: str, os_name: str, version: str, hotfixes: tuple[str, ...], host: str = "APP-01") -> str:
    """The default (list) format, CRLF line ends, as ``systeminfo > file`` writes it."""
    labels, build_word, count = LANGUAGES[language]
    width = max(len(label) for label in labels) + 2
    build = version.split(".")[2]
    fields = [
        host,
        os_name,
        f"{version} {build_word} {build}",
        "Microsoft Corporation",
        "Standalone Server",
        "05.01.2019, 09:52:19",
        "",
    ]
    lines = [""]
    lines += [f"{label + ':':<{width}}{value}".rstrip() for label, value in zip(labels, fields, strict=False)]
    lines.append(f"{labels[7] + ':':<{width}}{count.format(n=len(hotfixes))}")
    lines += [f"{'':<{width}}[{index:02d}]: {kb}" for index, kb in enumerate(hotfixes, start=1)]
    lines.append(f"{labels[8] + ':':<{width}}1")
    lines.append(f"{'':<{width}}[01]: Intel(R) 82574L Gigabit Network Connection")
    lines.append(f"{'':<{width + 6}}[01]: 10.0.0.5")
    return "\r\n".join(lines) + "\r\n"


def systeminfo_csv(os_name: str, version: str, hotfixes: tuple[str, ...]) -> str:
    """``systeminfo /fo csv``: a header row and one row of quoted values."""
    build = version.split(".")[2]
    hotfix_cell = ",".join(
        [f"{len(hotfixes)} Hotfix(s) Installed.", *(f"[{i:02d}]: {kb}" for i, kb in enumerate(hotfixes, 1))]
    )
    header = ["Host Name", "OS Name", "OS Version", "OS Manufacturer", "Hotfix(s)"]
    values = ["APP-01", os_name, f"{version} N/A Build {build}", "Microsoft Corporation", hotfix_cell]
    return "\r\n".join(",".join(f'"{cell}"' for cell in row) for row in (header, values)) + "\r\n"
