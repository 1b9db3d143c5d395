-- Roll the chat pods: the operator copies this annotation onto the chat Deployment's pod template,
-- the same way `kubectl rollout restart` (and `kubectl hypersend restart`) changes it.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["hypersend.io/restartedAt"] = os.date("!%Y-%m-%dT%XZ")
return obj
