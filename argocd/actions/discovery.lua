-- Resource actions ArgoCD offers for a HypersendCluster: pause / resume reconciliation and
-- restart the chat pods. Only the one that makes sense in the current state is enabled.
local actions = {}
local paused = false
if obj.metadata ~= nil and obj.metadata.annotations ~= nil then
  paused = obj.metadata.annotations["hypersend.io/paused"] == "true"
end
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused}
-- A paused operator applies nothing, so a restart request would only wait.
actions["restart"] = {["disabled"] = paused}
return actions
