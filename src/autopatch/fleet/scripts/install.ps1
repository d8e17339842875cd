# AutoPatch install: installs ONE KB through the Windows Update Agent COM API and prints ONE line
# of JSON (the install contract of autopatch/fleet/base.py). Exit code 0 when the KB is on the
# server afterwards (status "installed" or "already-installed"), 1 otherwise.
#
# The KB arrives as a bound parameter, never as text spliced into this script (defect 2 of the
# original); the pattern below rejects anything but a KB id even if a caller forgot to validate.
param(
    # Deliberately neither Mandatory nor validated here: SSM runs this as "& { ... } -KbId $value",
    # and a parameter binding error there happens before any line of this script runs, so nothing
    # here can catch it and Windows PowerShell 5.1 can end with exit code 0 and no report. The same
    # rule is checked first thing below, inside a try that exits 1.
    [string]$KbId
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

# The KB rule as the parameter of a function called inside a try, so that a binding error lands in
# the catch and exits 1. [0-9] as well, because \d also matches other scripts' digits (full-width,
# Arabic-Indic).
function Assert-KbId {
    param([ValidatePattern('^KB\d{6,7}$')][string]$KbId)
    if ($KbId -cnotmatch '^KB[0-9]{6,7}$') { throw 'the digits are not ASCII' }
}
$KbId = ([string]$KbId).ToUpperInvariant()
try {
    Assert-KbId -KbId $KbId
}
catch {
    [Console]::Error.WriteLine("AutoPatch install refused: the KB id '$KbId' is not KB followed by 6 or 7 digits")
    exit 1
}

# 0x80240017 WU_E_NOT_APPLICABLE and 0x80240016 WU_E_OPERATIONINPROGRESS, as signed Int32.
$WU_E_NOT_APPLICABLE = -2145124329
$WU_E_OPERATIONINPROGRESS = -2145124330
# How long to wait for another installation (Automatic Updates, an administrator) to finish.
$InstallerBusyLimitSeconds = 300

# Windows PowerShell 5.1 writes stdout in the OEM code page (437, 850, ...), so a non-ASCII update
# title or error message would reach SSM mangled. JSON's \uXXXX escapes are plain ASCII.
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

function Write-InstallReport([int]$ResultCode, [int]$HResult, [bool]$RebootRequired, [string]$Status, [string]$Message) {
    $report = [ordered]@{
        schema          = 1
        kb              = $KbId
        result_code     = $ResultCode
        hresult         = $HResult
        reboot_required = $RebootRequired
        message         = $Message
        status          = $Status
    }
    # -Compress keeps the report on one line: the parser reads the LAST non-empty line of output.
    ConvertTo-AsciiJson ($report | ConvertTo-Json -Compress -Depth 4)
}

# Search() can return without throwing and still not have succeeded (ResultCode 3
# SucceededWithErrors, 4 Failed): a partial list could hide the KB. ISearchResult has no HResult
# of its own; its first warning carries the reason (E_FAIL when there is none).
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

# Every update of a search that carries the KB: one KB can ship as several updates.
function Get-UpdatesCarryingKb($SearchResult, [string]$ArticleNumber) {
    $found = New-Object System.Collections.Generic.List[object]
    foreach ($update in $SearchResult.Updates) {
        foreach ($articleId in $update.KBArticleIDs) {
            if ([string]$articleId -eq $ArticleNumber) { $found.Add($update); break }
        }
    }
    , $found.ToArray()  # the comma keeps an empty or one-item array an array
}

# The result of each update, not only the overall one: the overall ResultCode can read Succeeded
# (or SucceededWithErrors) while this KB's update did not. Of several updates carrying the KB, the
# first that did not succeed speaks for the KB; when all did, the first one.
function Get-UpdateOutcome($OperationResult, [int]$UpdateCount) {
    for ($index = 0; $index -lt $UpdateCount; $index++) {
        $updateResult = $OperationResult.GetUpdateResult($index)
        if ($updateResult.ResultCode -ne 2 -and $updateResult.ResultCode -ne 3) { return $updateResult }
    }
    return $OperationResult.GetUpdateResult(0)
}

# A WSUS server is in use when policy says so (UseWUServer=1): then an update it does not offer is
# usually one its administrator has not approved, not one that does not apply to this server.
function Test-UsesWsus {
    $policy = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU' -Name 'UseWUServer' -ErrorAction SilentlyContinue
    return ($null -ne $policy) -and ($policy.UseWUServer -eq 1)
}

$articleNumber = $KbId.Substring(2)
try {
    $session = New-Object -ComObject Microsoft.Update.Session
    $session.ClientApplicationID = 'AutoPatch'
    # ServerSelection stays ssDefault: "whatever Windows Update policy points at" - the WSUS server
    # when policy names one, Windows Update otherwise. It is NOT Microsoft Update (updates for other
    # Microsoft products); scan.ps1 searches the same source, so a KB it offered is found here.
    $searcher = $session.CreateUpdateSearcher()

    # IsHidden=0: an update an administrator hid stays hidden; it is reported as "hidden" below.
    $waiting = Invoke-UpdateSearch $searcher "IsInstalled=0 and IsHidden=0 and Type='Software'"
    $candidates = Get-UpdatesCarryingKb $waiting $articleNumber
    if ($candidates.Count -eq 0) {
        # Not among the updates waiting. Find out why: a retry after a finished install must succeed,
        # and a KB an administrator must approve or unhide must not read as "does not apply".
        $installedUpdates = Get-UpdatesCarryingKb (Invoke-UpdateSearch $searcher "IsInstalled=1 and Type='Software'") $articleNumber
        if ($installedUpdates.Count -gt 0) {
            # Installed before this command ran (a retry, or an install by hand); the restart it
            # needs may still be pending.
            $rebootRequired = [bool](New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired
            foreach ($update in $installedUpdates) { if ($update.RebootRequired) { $rebootRequired = $true } }
            Write-InstallReport -ResultCode 2 -HResult 0 -RebootRequired $rebootRequired -Status 'already-installed' `
                -Message ('already installed: {0}' -f $installedUpdates[0].Title)
            exit 0
        }
        # Hidden and not approved are failures (result code 4, no Windows HRESULT), not
        # WU_E_NOT_APPLICABLE: someone has to act on them, and "does not apply" would hide that.
        $hiddenUpdates = Get-UpdatesCarryingKb (Invoke-UpdateSearch $searcher "IsInstalled=0 and IsHidden=1 and Type='Software'") $articleNumber
        if ($hiddenUpdates.Count -gt 0) {
            Write-InstallReport -ResultCode 4 -HResult 0 -RebootRequired $false -Status 'hidden' `
                -Message ('hidden on this server (unhide it to install): {0}' -f $hiddenUpdates[0].Title)
        }
        elseif (Test-UsesWsus) {
            Write-InstallReport -ResultCode 4 -HResult 0 -RebootRequired $false -Status 'not-approved' `
                -Message "$KbId is not approved on the WSUS server (or does not apply to this server)"
        }
        else {
            # Not installed, not hidden, not offered: superseded, or not for this OS.
            Write-InstallReport -ResultCode 4 -HResult $WU_E_NOT_APPLICABLE -RebootRequired $false -Status 'not-applicable' `
                -Message 'KB not offered by Windows Update (superseded, or not for this OS)'
        }
        exit 1
    }

    # Every update that carries the KB (one per language or edition, say): the KB is installed
    # only when all of them are.
    $selected = New-Object -ComObject Microsoft.Update.UpdateColl
    foreach ($update in $candidates) {
        # Unattended install: an unaccepted licence would make Install() skip the update.
        if (-not $update.EulaAccepted) { $update.AcceptEula() }
        [void]$selected.Add($update)
    }
    $title = [string]$candidates[0].Title
    if ($candidates.Count -gt 1) { $title += ' (+{0} more)' -f ($candidates.Count - 1) }

    # Another installation (Automatic Updates, an administrator, a command SSM gave up on) holds
    # the installer, and Install() would fail with WU_E_OPERATIONINPROGRESS: wait, a bounded time.
    $installer = $session.CreateUpdateInstaller()
    $deadline = (Get-Date).AddSeconds($InstallerBusyLimitSeconds)
    while ($installer.IsBusy) {
        if ((Get-Date) -gt $deadline) {
            Write-InstallReport -ResultCode 4 -HResult $WU_E_OPERATIONINPROGRESS -RebootRequired $false -Status 'failed' `
                -Message ('the Windows Update installer was still busy with another installation after {0} s: {1}' -f $InstallerBusyLimitSeconds, $title)
            exit 1
        }
        Start-Sleep -Seconds 10
    }

    $downloader = $session.CreateUpdateDownloader()
    $downloader.Updates = $selected
    $download = $downloader.Download()
    $downloadOutcome = Get-UpdateOutcome $download $selected.Count
    if ($downloadOutcome.ResultCode -ne 2 -and $downloadOutcome.ResultCode -ne 3) {
        Write-InstallReport -ResultCode $downloadOutcome.ResultCode -HResult $downloadOutcome.HResult -RebootRequired $false `
            -Status 'failed' -Message "download failed: $title"
        exit 1
    }

    # SYSTEM has no desktop: an update that asks a question would wait for a click nobody can make.
    $installer.ForceQuiet = $true
    $installer.Updates = $selected
    $installation = $installer.Install()
    $outcome = Get-UpdateOutcome $installation $selected.Count
    $succeeded = $outcome.ResultCode -eq 2 -or $outcome.ResultCode -eq 3
    $rebootRequired = [bool]$installation.RebootRequired
    if ($succeeded) {
        Write-InstallReport -ResultCode $outcome.ResultCode -HResult $outcome.HResult -RebootRequired $rebootRequired `
            -Status 'installed' -Message "installed: $title"
        exit 0
    }
    Write-InstallReport -ResultCode $outcome.ResultCode -HResult $outcome.HResult -RebootRequired $rebootRequired `
        -Status 'failed' -Message "install failed: $title"
    exit 1
}
catch {
    # PowerShell wraps a failed COM call in a MethodInvocationException whose own HResult is always
    # 0x80131501: the Windows Update HRESULT (e.g. 0x8024402C, no connection to the server) is on
    # the innermost exception.
    $cause = $_.Exception.GetBaseException()
    Write-InstallReport -ResultCode 4 -HResult $cause.HResult -RebootRequired $false -Status 'failed' -Message $cause.Message
    exit 1
}
