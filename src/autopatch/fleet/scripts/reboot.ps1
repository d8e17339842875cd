# AutoPatch reboot: restarts Windows cleanly through the SSM Agent, then proves it with ONE line of
# JSON: {"schema":1,"rebooted":true,"last_boot_time":"2024-02-14T03:12:45Z"}.
#
# Exit code 3010 asks the SSM Agent to restart Windows and to run this same command again once it
# is back ("reboot and resume"). Unlike EC2 RebootInstances, the restart is an orderly shutdown that
# waits for Windows to finish servicing, and it works for on-premises (mi-) servers too.
#
# Both runs execute this same text: a marker under ProgramData, written by the first run and
# holding this command's id, tells them apart. The command id is in the folder the agent runs the
# script from (...\orchestration\<command-id>\...). A marker left by another command (interrupted
# before its restart) is not ours: this command then restarts as if it were the first run.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

$runPath = if ($PSCommandPath) { $PSCommandPath } else { (Get-Location).Path }
$commandId = $runPath
if ($runPath -match '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}') {
    $commandId = $Matches[0].ToLowerInvariant()
}
$markerFolder = Join-Path -Path $env:ProgramData -ChildPath 'AutoPatch'
$marker = Join-Path -Path $markerFolder -ChildPath 'reboot-command.txt'

try {
    $markedBy = $null
    if (Test-Path -LiteralPath $marker) {
        $markedBy = (Get-Content -LiteralPath $marker -Raw).Trim()
    }
    if ($markedBy -ne $commandId) {
        New-Item -ItemType Directory -Path $markerFolder -Force | Out-Null
        Set-Content -LiteralPath $marker -Value $commandId -Encoding ASCII
        exit 3010
    }

    Remove-Item -LiteralPath $marker -Force
    $bootTime = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime()
    $report = [ordered]@{
        schema         = 1
        rebooted       = $true
        last_boot_time = $bootTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
    }
    $report | ConvertTo-Json -Compress
    exit 0
}
catch {
    [Console]::Error.WriteLine(('AutoPatch reboot failed (HRESULT 0x{0:X8}): {1}' -f $_.Exception.HResult, $_.Exception.Message))
    exit 1
}
