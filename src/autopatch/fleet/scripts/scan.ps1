# AutoPatch scan: prints ONE line of JSON (the scan contract of autopatch/fleet/base.py).
#
# Only what ships with Windows is used (CIM, the registry, the Windows Update Agent COM API):
# the original needed PSWindowsUpdate installed by hand and failed every KB on servers without it.
# A failure to read the server itself (CIM, registry, hotfix list) prints the reason on stderr and
# exits 1. A failure of the Windows Update part alone (offline server, WSUS unreachable) does not
# fail the scan: build and installed KBs are still true, so the report carries them with
# offered_updates empty and "error" saying why (exit 0). The error, not the empty list, is what
# the engine reads: an empty list alone would wrongly reassure.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

# Windows PowerShell 5.1 writes stdout in the OEM code page (437, 850, ...), so a non-ASCII
# computer name or update title would reach SSM mangled. JSON's \uXXXX escapes are plain ASCII.
function ConvertTo-AsciiJson([string]$Json) {
    $builder = New-Object System.Text.StringBuilder
    foreach ($character in $Json.ToCharArray()) {
        if ([int]$character -gt 0x7E) {
            # One escape per UTF-16 unit: a surrogate pair (an emoji) becomes two, as JSON expects.
            [void]$builder.AppendFormat('\u{0:x4}', [int]$character)
        }
        else {
            [void]$builder.Append($character)
        }
    }
    $builder.ToString()
}

# Search() can return without throwing and still not have succeeded (ResultCode 3
# SucceededWithErrors, 4 Failed): a partial list must not pass for the whole one. ISearchResult has
# no HResult of its own; its first warning carries the reason (E_FAIL when there is none).
function Invoke-UpdateSearch($Searcher, [string]$Criteria) {
    $searchResult = $Searcher.Search($Criteria)
    if ($searchResult.ResultCode -ne 2) {
        $hresult = -2147467259  # 0x80004005 E_FAIL
        if ($searchResult.Warnings.Count -gt 0) { $hresult = [int]$searchResult.Warnings.Item(0).HResult }
        $message = 'Windows Update search "{0}" ended with result code {1}' -f $Criteria, $searchResult.ResultCode
        throw (New-Object System.Runtime.InteropServices.COMException ($message, $hresult))
    }
    return $searchResult
}

try {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $currentVersion = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
    # Invariant culture: in a format string ':' is the culture's time separator and 'yyyy' a year of
    # the culture's calendar (th-TH counts Buddhist years), and SYSTEM runs in the server's culture.
    $lastBootTime = $os.LastBootUpTime.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [System.Globalization.CultureInfo]::InvariantCulture)

    # Installed KBs from two sources, merged: Get-HotFix (Win32_QuickFixEngineering) lists only what
    # Component Based Servicing installed and misses updates installed otherwise (.NET Framework,
    # MSI-based updates); the Windows Update Agent's IsInstalled=1 search below adds those.
    # Get-HotFix also lists entries such as "File 1" on old servers: keep only KB ids.
    $installed = New-Object 'System.Collections.Generic.SortedSet[string]'
    foreach ($hotFix in @(Get-HotFix)) {
        $hotFixId = [string]$hotFix.HotFixID
        if ($hotFixId -match '^KB[0-9]{6,7}$') { [void]$installed.Add($hotFixId.ToUpperInvariant()) }
    }

    # Three places Windows records an unfinished servicing operation that needs a restart.
    $pendingReboot = (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') -or
        (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') -or
        ($null -ne (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations' -ErrorAction SilentlyContinue))

    $offered = New-Object System.Collections.Generic.List[object]
    $updateError = $null
    try {
        # And a fourth: the Windows Update Agent's own flag, set by an install that needs a restart.
        $systemInfo = New-Object -ComObject Microsoft.Update.SystemInfo
        if ($systemInfo.RebootRequired) { $pendingReboot = $true }

        $session = New-Object -ComObject Microsoft.Update.Session
        $session.ClientApplicationID = 'AutoPatch'
        # ServerSelection stays ssDefault: "whatever Windows Update policy points at" - the WSUS server
        # when policy names one, Windows Update otherwise. It is NOT Microsoft Update (updates for
        # other Microsoft products), and install.ps1 searches the same source, so what this scan
        # reports as offered is what an install can find.
        $searcher = $session.CreateUpdateSearcher()

        foreach ($update in (Invoke-UpdateSearch $searcher "IsInstalled=1 and Type='Software'").Updates) {
            foreach ($articleId in $update.KBArticleIDs) {
                if ([string]$articleId -match '^[0-9]{6,7}$') { [void]$installed.Add('KB' + $articleId) }
            }
        }

        # What Windows Update would install now. IsHidden=0: an update an administrator hid is not
        # installable by install.ps1, so offering it would plan an install that cannot happen.
        # One update can carry several KB ids; an update with none (some drivers, definition files
        # without a KB) cannot be named in the catalog: skipped.
        foreach ($update in (Invoke-UpdateSearch $searcher "IsInstalled=0 and IsHidden=0 and Type='Software'").Updates) {
            foreach ($articleId in $update.KBArticleIDs) {
                if ([string]$articleId -match '^[0-9]{6,7}$') {
                    $offered.Add([ordered]@{ kb = 'KB' + $articleId; title = [string]$update.Title })
                }
            }
        }
    }
    catch {
        # PowerShell wraps a failed COM call in a MethodInvocationException whose own HResult is
        # always 0x80131501: the Windows Update HRESULT (e.g. 0x8024402C, no connection to the
        # server) is on the innermost exception.
        $cause = $_.Exception.GetBaseException()
        $offered.Clear()
        $updateError = 'Windows Update search failed (HRESULT 0x{0:X8}): {1}' -f $cause.HResult, $cause.Message
    }

    $report = [ordered]@{
        schema            = 1
        computer_name     = [string]$env:COMPUTERNAME
        os_caption        = [string]$os.Caption
        os_version        = [string]$os.Version
        current_build     = [string]$currentVersion.CurrentBuild
        ubr               = [int]$currentVersion.UBR
        installation_type = [string]$currentVersion.InstallationType
        installed_kbs     = [object[]]@($installed)
        offered_updates   = [object[]]$offered.ToArray()
        pending_reboot    = [bool]$pendingReboot
        last_boot_time    = $lastBootTime
        error             = $updateError
    }
    # -Compress keeps the report on one line: the parser reads the LAST non-empty line of output.
    ConvertTo-AsciiJson ($report | ConvertTo-Json -Compress -Depth 4)
    exit 0
}
catch {
    $cause = $_.Exception.GetBaseException()  # the COM or CIM error, not PowerShell's wrapper
    [Console]::Error.WriteLine(('AutoPatch scan failed (HRESULT 0x{0:X8}): {1}' -f $cause.HResult, $cause.Message))
    exit 1
}
