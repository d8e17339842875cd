# AutoPatch scan: prints ONE line of JSON (the scan contract of autopatch/fleet/base.py).
#
# Only what ships with Windows is used (CIM, the registry, the Windows Update Agent COM API):
# the original needed PSWindowsUpdate installed by hand and failed every KB on servers without it.
# A failure prints the reason on stderr and exits 1, so the run records an error instead of an
# empty (and wrongly reassuring) list of offered updates.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

try {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $currentVersion = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'

    # Get-HotFix also lists entries such as "File 1" on old servers: keep only KB ids.
    $installed = @(
        Get-HotFix | ForEach-Object { [string]$_.HotFixID } |
            Where-Object { $_ -match '^KB\d{6,7}$' } | Sort-Object -Unique
    )

    # What Windows Update would install now. One update can carry several KB ids; an update with
    # none (some drivers, definition files without a KB) cannot be named in the catalog: skipped.
    $session = New-Object -ComObject Microsoft.Update.Session
    $session.ClientApplicationID = 'AutoPatch'
    $searcher = $session.CreateUpdateSearcher()
    $searchResult = $searcher.Search("IsInstalled=0 and Type='Software'")
    $offered = New-Object System.Collections.Generic.List[object]
    foreach ($update in $searchResult.Updates) {
        foreach ($articleId in $update.KBArticleIDs) {
            if ([string]$articleId -match '^\d{6,7}$') {
                $offered.Add([ordered]@{ kb = 'KB' + $articleId; title = [string]$update.Title })
            }
        }
    }

    # Three places Windows records an unfinished servicing operation that needs a restart.
    $pendingReboot = (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') -or
        (Test-Path -Path 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') -or
        ($null -ne (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -Name 'PendingFileRenameOperations' -ErrorAction SilentlyContinue))

    $report = [ordered]@{
        schema            = 1
        computer_name     = [string]$env:COMPUTERNAME
        os_caption        = [string]$os.Caption
        os_version        = [string]$os.Version
        current_build     = [string]$currentVersion.CurrentBuild
        ubr               = [int]$currentVersion.UBR
        installation_type = [string]$currentVersion.InstallationType
        installed_kbs     = [object[]]$installed
        offered_updates   = [object[]]$offered.ToArray()
        pending_reboot    = [bool]$pendingReboot
    }
    # -Compress keeps the report on one line: the parser reads the LAST non-empty line of output.
    $report | ConvertTo-Json -Compress -Depth 4
    exit 0
}
catch {
    $hresult = $_.Exception.HResult
    [Console]::Error.WriteLine(('AutoPatch scan failed (HRESULT 0x{0:X8}): {1}' -f $hresult, $_.Exception.Message))
    exit 1
}
