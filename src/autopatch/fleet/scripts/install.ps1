# AutoPatch install: installs ONE KB through the Windows Update Agent COM API and prints ONE line
# of JSON (the install contract of autopatch/fleet/base.py). Exit code 0 when Windows reports
# Succeeded (2) or SucceededWithErrors (3), 1 otherwise.
#
# The KB arrives as a bound parameter, never as text spliced into this script (defect 2 of the
# original); the pattern below rejects anything but a KB id even if a caller forgot to validate.
param(
    [Parameter(Mandatory)][ValidatePattern('^KB\d{6,7}$')][string]$KbId
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

function Write-InstallReport([int]$ResultCode, [int]$HResult, [bool]$RebootRequired, [string]$Message) {
    $report = [ordered]@{
        schema          = 1
        kb              = $KbId
        result_code     = $ResultCode
        hresult         = $HResult
        reboot_required = $RebootRequired
        message         = $Message
    }
    $report | ConvertTo-Json -Compress -Depth 4
}

$articleNumber = $KbId.Substring(2)
try {
    $session = New-Object -ComObject Microsoft.Update.Session
    $session.ClientApplicationID = 'AutoPatch'
    $searcher = $session.CreateUpdateSearcher()
    $searchResult = $searcher.Search("IsInstalled=0 and Type='Software'")

    $selected = New-Object -ComObject Microsoft.Update.UpdateColl
    foreach ($update in $searchResult.Updates) {
        foreach ($articleId in $update.KBArticleIDs) {
            if ([string]$articleId -eq $articleNumber -and $selected.Count -eq 0) {
                # Unattended install: an unaccepted licence would make Install() skip the update.
                if (-not $update.EulaAccepted) { $update.AcceptEula() }
                [void]$selected.Add($update)
            }
        }
    }
    if ($selected.Count -eq 0) {
        # 0x80240017 WU_E_NOT_APPLICABLE: already installed, superseded, or not for this OS.
        Write-InstallReport -ResultCode 4 -HResult (-2145124329) -RebootRequired $false -Message 'KB not offered by Windows Update'
        exit 1
    }
    $title = [string]$selected.Item(0).Title

    $downloader = $session.CreateUpdateDownloader()
    $downloader.Updates = $selected
    $download = $downloader.Download()
    if ($download.ResultCode -ne 2 -and $download.ResultCode -ne 3) {
        Write-InstallReport -ResultCode $download.ResultCode -HResult $download.HResult -RebootRequired $false -Message "download failed: $title"
        exit 1
    }

    $installer = $session.CreateUpdateInstaller()
    $installer.Updates = $selected
    $installation = $installer.Install()
    $succeeded = $installation.ResultCode -eq 2 -or $installation.ResultCode -eq 3
    $verdict = if ($succeeded) { 'installed' } else { 'install failed' }
    Write-InstallReport -ResultCode $installation.ResultCode -HResult $installation.HResult `
        -RebootRequired ([bool]$installation.RebootRequired) -Message "${verdict}: $title"
    if ($succeeded) { exit 0 } else { exit 1 }
}
catch {
    # COM failures carry the Windows Update HRESULT (e.g. 0x8024402C, no connection to the server).
    Write-InstallReport -ResultCode 4 -HResult $_.Exception.HResult -RebootRequired $false -Message $_.Exception.Message
    exit 1
}
