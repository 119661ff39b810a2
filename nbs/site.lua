-- Two changes to what nbdev hands Quarto, so that the committed site leads nowhere dead and rebuilds identically.

-- nbdev's show_doc links each symbol to its source under `[project.urls] Repository`. This repository names no host,
-- so those links come out host-less (`/blob/<branch>/...`) and would lead nowhere: drop them. With a Repository URL
-- set they carry its host and are kept.
function Link(link)
  if link.target:match('^/blob/') then return {} end
end

-- The docs build runs the exported cells and the show_doc cells it adds: each run stamps its cell with the time it ran,
-- and each added cell gets a random id. Neither is shown, but both land in the HTML: drop them (and the notebook's
-- own cell ids with them, which nothing links to).
function Div(div)
  if not div.classes:includes('cell') then return end
  if div.identifier:match('^%x%x%x%x%x%x%x%x$') then div.identifier = '' end
  local stamps = {}
  for key, _ in pairs(div.attributes) do
    if key:match('^quarto%-private%-') then table.insert(stamps, key) end
  end
  for _, key in ipairs(stamps) do div.attributes[key] = nil end
  return div
end
